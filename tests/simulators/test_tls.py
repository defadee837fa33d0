"""sensord-sim over TLS with credentials, against a Mosquitto started for the test.

Certificates (a CA, the broker's for 127.0.0.1, a client's) come from sensord.testing's
make_tls_files; the broker requires a client certificate and a user name and password.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sensord.testing import Mosquitto, TlsFiles, make_tls_files
from tests.support import run_sim, start_recorder

TOOLS = ("openssl", "mosquitto", "mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS), reason=f"needs {', '.join(TOOLS)}"
)

USER, PASSWORD = "sim-user", "s3cret pass"


@dataclass
class TlsBroker:
    port: int
    tls: TlsFiles
    password_file: Path

    @property
    def url(self) -> str:
        return f"mqtts://{USER}@127.0.0.1:{self.port}"

    def tls_args(self) -> list[str]:
        return [
            *("--mqtt", self.url, "--ca-file", str(self.tls.ca)),
            *("--cert-file", str(self.tls.client_cert), "--key-file", str(self.tls.client_key)),
            *("--password-file", str(self.password_file)),
        ]


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    d = tmp_path_factory.mktemp("sim-tls")
    tls = make_tls_files(d)
    (d / "password.txt").write_text(PASSWORD + "\n")
    # a client certificate and a user name and password, both required
    with Mosquitto(d, tls=tls, users={USER: PASSWORD}) as broker:
        yield TlsBroker(broker.port, tls, d / "password.txt")


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
