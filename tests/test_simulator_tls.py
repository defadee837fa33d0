"""sensord-sim over TLS with credentials, against a Mosquitto started for the test.

Certificates (a CA, the broker's for 127.0.0.1, a client's) are made here with the openssl
command line; the broker requires a client certificate and a user name and password.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, run_sim, start_recorder

TOOLS = ("openssl", "mosquitto", "mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS), reason=f"needs {', '.join(TOOLS)}"
)

USER, PASSWORD = "sim-user", "s3cret pass"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass
class TlsBroker:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    password_file: Path

    @property
    def url(self) -> str:
        return f"mqtts://{USER}@127.0.0.1:{self.port}"

    def tls_args(self) -> list[str]:
        return [
            *("--mqtt", self.url, "--ca-file", str(self.ca)),
            *("--cert-file", str(self.client_cert), "--key-file", str(self.client_key)),
            *("--password-file", str(self.password_file)),
        ]


def _make_certs(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "sim-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    # Not under pytest's tmp dir: that one is private (0700) and mosquitto, started as root,
    # drops to its own user, which must still read its certificates and password file.
    d = Path(tempfile.mkdtemp(prefix="simtest-tls-"))
    d.chmod(0o755)
    try:
        yield from _broker_in(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _broker_in(d: Path) -> Iterator[TlsBroker]:
    _make_certs(d)
    for f in d.iterdir():
        f.chmod(0o644)
    passwd = d / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), USER, PASSWORD], check=True, timeout=30
    )
    passwd.chmod(0o644)
    (d / "password.txt").write_text(PASSWORD + "\n")
    port = free_port()
    (d / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
        "require_certificate true\nallow_anonymous false\n"
        f"password_file {passwd}\npersistence false\nmax_queued_messages 0\n"
    )
    log = (d / "mosquitto.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, (d / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.05)
        yield TlsBroker(port, d / "ca.pem", d / "client.pem", d / "client.key", d / "password.txt")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return run_sim(*args, "--client-id", f"simtest-{uuid.uuid4()}")


def test_publishes_and_records_over_tls_with_client_cert_and_password_file(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    root, trace = f"simtest-{uuid.uuid4().hex[:8]}", tmp_path / "tls.jsonl"
    with start_recorder(
        *(*tls_broker.tls_args(), "--topics", f"{root}/#"),
        *("-o", str(trace), "--count", "200", "--json"),
    ) as recorder:
        done = _sim(*tls_broker.tls_args(), "--topic-root", root, "--count", "200", "--rate", "100",
                    "--json", "--quiet")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sent"] == 200
        recorder.wait(timeout=20)
    assert recorder.returncode == 0, recorder.err
    assert json.loads(recorder.out)["recorded"] == 200
    assert len(trace.read_text().splitlines()) == 201  # header + messages


def test_wrong_password_is_refused_naming_the_url_without_the_password(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    args = tls_broker.tls_args()
    args[args.index("--password-file") + 1] = str(wrong)
    done = _sim(*args, "--count", "1")
    assert done.returncode == 1
    # Mosquitto 2.0 answers a bad password with "not authorized" (CONNACK 5), others with 4.
    assert re.search(r"refused the connection: (not authorized|bad user name)", done.stderr)
    assert f"mqtts://{USER}:***@127.0.0.1:{tls_broker.port}" in done.stderr
    assert "nope" not in done.stderr


def test_an_untrusted_broker_certificate_fails_the_handshake(tls_broker: TlsBroker) -> None:
    args = tls_broker.tls_args()
    del args[args.index("--ca-file") : args.index("--ca-file") + 2]  # system CAs only
    done = _sim(*args, "--count", "1")
    assert done.returncode == 1
    assert "TLS handshake" in done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt", "mqtt://h", "--ca-file", "x.pem"], "need an mqtts:// URL"),
        (["--mqtt", "mqtts://h", "--cert-file", "c.pem"], "go together"),
        (["--mqtt", "mqtts://h", "--ca-file", "/nonexistent.pem"], "TLS files"),
        (["--mqtt", "mqtts://h", "--password-file", "/nonexistent"], "--password-file"),
    ],
)
def test_tls_and_credential_usage_errors_exit_2(args: list[str], message: str) -> None:
    done = _sim(*args, "--count", "1")
    assert done.returncode == 2
    assert message in done.stderr
