"""A throwaway PKI for a TLS listener: a CA, a server certificate and a client certificate."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A CA, a server certificate and key for the broker, a client certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(workdir: Path, server_san: str = "IP:127.0.0.1,DNS:localhost") -> TlsFiles:
    """Generate the files in `workdir` with the openssl CLI (EC P-256 keys: fast)."""
    openssl = shutil.which("openssl") or "/usr/bin/openssl"

    def run(*args: str) -> None:
        # the arguments are ours, not a user's: no shell, a fixed program
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=workdir)  # noqa: S603

    def key(name: str) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)

    key("ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=sensord test CA",
        "-days", "2", "-out", "ca.pem")  # fmt: skip
    for name, ext in (
        ("server", f"subjectAltName={server_san}"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key(f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=sensord test {name}",
            "-out", f"{name}.csr")  # fmt: skip
        (workdir / f"{name}.ext").write_text(ext + "\n", encoding="utf-8")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.pem")  # fmt: skip
    return TlsFiles(
        ca=workdir / "ca.pem",
        server_cert=workdir / "server.pem",
        server_key=workdir / "server.key",
        client_cert=workdir / "client.pem",
        client_key=workdir / "client.key",
    )
