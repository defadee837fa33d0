"""E-mail to a real SMTP server (aiosmtpd) and alerts to a real Prometheus Alertmanager."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support import (
    ALERTMANAGER_BIN,
    AlertmanagerProcess,
    SensordProcess,
    free_port,
    make_event,
    publish_events,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e


class Mailbox:
    """aiosmtpd handler: keeps every accepted mail; refuses recipients at reject.example."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.endswith("@reject.example"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append(msg)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"sensord",
        b"pw-from-file",
    )
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield box, port
    controller.stop()


async def test_email_groups_alerts_into_one_mail_with_subject_and_body(
    sensord: SensordProcess, smtp: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, port = smtp
    (tmp_path / "smtp.pw").write_text("pw-from-file\n")
    sensord.role = "notify"
    base = {
        "type": "email",
        "port": port,
        "username": "sensord",
        "password_file": "smtp.pw",
        "sender": "sensord@plant.example",
        "subject_template": "[{STATUS}] {rule} on {site}/{device}",
        "body_template": "{severity} {rule} {site}/{device}: {summary} (value {value:.1f})",
        "retry": {"max_attempts": 2, "delay": "100ms"},
    }
    sensord.channels = [
        {**base, "name": "mail", "to": ["ops@plant.example"], "group_wait": "500ms"},
        {**base, "name": "bad", "to": ["nobody@reject.example"]},
    ]
    first = make_event(site="plant-1", device="t-1", value=81.25)
    second = make_event(site="plant-1", device="t-2", value=90.0)
    async with running(sensord):
        await publish_events(sensord.prefix, [first, second])
        await wait_for(lambda: len(box.mails) >= 1)
        await asyncio.sleep(0.8)  # a second mail for the batch would arrive now
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="bad",outcome="dead"}', 2
        )
        assert await sensord.stop() == 0
    assert len(box.mails) == 1
    (mail,) = box.mails
    assert mail["Subject"] == "[FIRING] critical-temperature on plant-1/t-1 (+1 more)"
    assert mail["From"] == "sensord@plant.example"
    assert box.envelopes[0] == ("sensord@plant.example", ["ops@plant.example"])
    body = mail.get_content()
    assert "critical critical-temperature plant-1/t-1: plant-1/t-1 temperature 81.2" in body
    assert "(value 81.2)" in body
    assert "plant-1/t-2" in body
    assert "(value 90.0)" in body
    assert metrics['sensord_notifications_total{channel="mail",outcome="sent"}'] == 2
    # 550 for the recipient is permanent: no retry
    assert metrics.get('sensord_notifications_total{channel="bad",outcome="retried"}', 0) == 0


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_email_over_starttls_and_implicit_tls_with_auth(
    sensord: SensordProcess, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    starttls_box, tls_box = Mailbox(), Mailbox()
    starttls_port, tls_port = free_port(), free_port()
    # STARTTLS is required before MAIL, and AUTH only over TLS (aiosmtpd's default)
    starttls = Controller(
        starttls_box,
        hostname="127.0.0.1",
        port=starttls_port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=_authenticate,
    )
    implicit = Controller(
        tls_box,
        hostname="127.0.0.1",
        port=tls_port,
        ssl_context=server_tls,
        authenticator=_authenticate,
        auth_require_tls=False,  # aiosmtpd only counts STARTTLS as TLS; this is TLS throughout
    )
    starttls.start()
    implicit.start()
    try:
        (tmp_path / "smtp.pw").write_text("pw-from-file\n")
        sensord.role = "notify"
        base = {
            "type": "email",
            "username": "sensord",
            "password_file": "smtp.pw",
            "ca_file": str(cert),
            "sender": "sensord@plant.example",
            "to": ["ops@plant.example"],
        }
        sensord.channels = [
            {**base, "name": "starttls", "port": starttls_port, "security": "starttls"},
            {**base, "name": "tls", "port": tls_port, "security": "tls"},
        ]
        async with running(sensord):
            await publish_events(sensord.prefix, [make_event(site="plant-3", device="t-9")])
            await wait_for(lambda: starttls_box.mails and tls_box.mails)
            assert await sensord.stop() == 0
    finally:
        starttls.stop()
        implicit.stop()
    for box in (starttls_box, tls_box):
        (mail,) = box.mails
        assert mail["Subject"] == "[FIRING] critical-temperature on plant-3/t-9"
        assert "sensor: plant-3/t-9 (temperature)" in mail.get_content()


@pytest.mark.skipif(
    not os.access(ALERTMANAGER_BIN, os.X_OK),
    reason=f"{ALERTMANAGER_BIN} is not installed (Debian package prometheus-alertmanager)",
)
async def test_alertmanager_shows_the_alert_and_then_its_resolution(
    sensord: SensordProcess, tmp_path: Path
) -> None:
    am = AlertmanagerProcess(tmp_path)
    am.spawn()
    try:
        await am.wait_ready()
        sensord.role = "notify"
        sensord.channels = [
            {"name": "am", "type": "alertmanager", "url": am.url, "resend_interval": "1s"}
        ]
        firing = make_event(site="plant-5", device="t-4")
        resolved = make_event(
            site="plant-5", device="t-4", status="resolved", fingerprint=firing["fingerprint"]
        )

        async def ours() -> list[dict[str, Any]]:
            return [a for a in await am.alerts() if a["labels"].get("site") == "plant-5"]

        async with running(sensord):
            await publish_events(sensord.prefix, [firing])
            seen: list[dict[str, Any]] = []
            for _ in range(100):
                if seen := await ours():
                    break
                await asyncio.sleep(0.1)
            assert len(seen) == 1, seen
            alert = seen[0]
            assert alert["labels"] == firing["labels"]
            assert alert["annotations"] == firing["annotations"]
            assert alert["startsAt"].startswith("2026-11-28T12:00:00")
            assert alert["status"]["state"] == "active"
            first_ends = alert["endsAt"]
            await asyncio.sleep(2.2)  # re-sent every second while firing: endsAt moves on
            (again,) = await ours()
            assert again["endsAt"] > first_ends
            await publish_events(sensord.prefix, [resolved])
            for _ in range(100):
                if not await ours():
                    break
                await asyncio.sleep(0.1)
            assert await ours() == []  # resolved: Alertmanager no longer lists it as active
            metrics = await sensord.metrics()
            assert await sensord.stop() == 0
        assert metrics['sensord_notifications_total{channel="am",outcome="sent"}'] == 2
    finally:
        am.stop()
