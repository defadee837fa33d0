"""`email`: SMTP via aiosmtplib; alerts arriving within `group_wait` share one mail."""

from __future__ import annotations

import asyncio
import contextlib
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar, Literal

import aiosmtplib
from pydantic import Field, field_validator

from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import render
from sensord.notify.settings import ChannelSettingsBase, check_template
from sensord.ops.settings import Duration

DEFAULT_EMAIL_SUBJECT = "[{STATUS}] {rule} on {site}/{device}"
DEFAULT_EMAIL_BODY = (
    "{STATUS} {severity} {rule}\n"
    "sensor: {site}/{device} ({kind})\n"
    "value: {value}  threshold: {threshold}\n"
    "summary: {summary}\n"
    "since: {starts_at}  ended: {ends_at}\n"
    "fingerprint: {fingerprint}\n"
)


class EmailChannelSettings(ChannelSettingsBase):
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("password_file", "ca_file")

    type: Literal["email"]
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    ca_file: Path | None = None  # CA bundle to verify the server with (default: system CAs)
    username: str | None = None
    password_file: Path | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    subject_template: str = DEFAULT_EMAIL_SUBJECT
    body_template: str = DEFAULT_EMAIL_BODY
    group_wait: Duration = 0.0
    timeout: Duration = 30.0

    @field_validator("subject_template", "body_template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        return check_template(v)


def build_message(settings: EmailChannelSettings, events: list[AlertEvent]) -> EmailMessage:
    """Subject from the first alert (`{count}` = alerts in the mail); one body part each."""
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.to)
    subject = render(settings.subject_template, events[0], settings.name, len(events))
    if len(events) > 1 and "{count}" not in settings.subject_template:
        subject += f" (+{len(events) - 1} more)"
    msg["Subject"] = subject
    parts = [render(settings.body_template, ev, settings.name, len(events)) for ev in events]
    msg.set_content("\n".join(parts))
    return msg


class EmailChannel:
    def __init__(
        self,
        settings: EmailChannelSettings,
        password_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.name = settings.name
        self._s = settings
        self._password_file = password_file
        self._ca_file = ca_file
        self._password: str | None = None
        self._batch: list[tuple[AlertEvent, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._password_file is not None:
            self._password = self._password_file.read_text().strip()

    async def send(self, event: AlertEvent) -> None:
        if self._s.group_wait <= 0:
            await self._deliver([event])
            return
        # Every message of a batch stays unacknowledged until the mail is accepted; the
        # batch is bounded by the channel's prefetch.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((event, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_later(), name=f"email-{self.name}")
        await done

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._s.group_wait)
        batch, self._batch, self._flusher = self._batch, [], None
        try:
            await self._deliver([ev for ev, _ in batch])
        except NotifyError as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _deliver(self, events: list[AlertEvent]) -> None:
        s = self._s
        msg = build_message(s, events)
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=self._password,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",  # "none": never STARTTLS
                cert_bundle=str(self._ca_file) if self._ca_file else None,
                timeout=s.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise NotifyError(
                f"SMTP {s.host}:{s.port} refused the recipients: "
                + "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients),
                retryable=any(code < 500 for code in codes),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx is the server's "try again later", 5xx is final
            raise NotifyError(
                f"SMTP {s.host}:{s.port} answered {exc.code} {exc.message}",
                retryable=exc.code < 500,
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise NotifyError(
                f"SMTP {s.host}:{s.port}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for _, fut in self._batch:
            if not fut.done():
                fut.set_exception(NotifyError("sensord stopping", retryable=True))


def _email(settings: EmailChannelSettings, context: ChannelContext) -> EmailChannel:
    password = context.resolve_optional(settings.password_file)
    return EmailChannel(settings, password, context.resolve_optional(settings.ca_file))


register("email", EmailChannelSettings, _email)
