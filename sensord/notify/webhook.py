"""`webhook` (Alertmanager v4 body, optional HMAC signature) and `slack` (incoming webhook)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import ClassVar, Literal

import aiohttp
from pydantic import Field, field_validator

from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.base import http_error
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import alertmanager_body, render
from sensord.notify.settings import ChannelSettingsBase, check_template, http_url
from sensord.ops.settings import Duration


class WebhookChannelSettings(ChannelSettingsBase):
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("hmac_secret_file",)

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0
    hmac_secret_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return http_url(v)


DEFAULT_SLACK_TEMPLATE = (
    "{STATUS} [{severity}] {rule} on {site}/{device}: {summary}"
    " (value {value}, threshold {threshold})"
)


class SlackChannelSettings(ChannelSettingsBase):
    type: Literal["slack"]
    url: str
    timeout: Duration = 10.0
    template: str = DEFAULT_SLACK_TEMPLATE

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return http_url(v)

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        return check_template(v)


SIGNATURE_HEADER = "X-Sensord-Signature"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


EVENT_ID_HEADER = "X-Sensord-Event-Id"


class HttpPoster:
    """One reused aiohttp session per channel, with a bounded connector (FACTS.md)."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self._timeout = timeout
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(limit=32),
            headers={"User-Agent": "sensord", **self._headers},
        )

    async def post(self, body: bytes, headers: dict[str, str], url: str | None = None) -> None:
        assert self._session is not None, "start() first"
        target = url or self.url
        try:
            async with self._session.post(
                target, data=body, headers={"Content-Type": "application/json", **headers}
            ) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                raise http_error(target, resp.status, resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(f"{target}: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class WebhookChannel:
    def __init__(
        self, settings: WebhookChannelSettings, external_url: str, secret_file: Path | None = None
    ) -> None:
        self.name = settings.name
        self._external_url = external_url
        self._secret_file = secret_file
        self._secret: bytes | None = None
        self._http = HttpPoster(settings.url, settings.timeout, settings.headers)

    async def start(self) -> None:
        if self._secret_file is not None:
            try:
                self._secret = self._secret_file.read_bytes().strip()
            except OSError as exc:
                raise NotifyError(
                    f"channel {self.name}: cannot read hmac_secret_file {self._secret_file}: "
                    f"{exc.strerror}",
                    retryable=False,
                ) from exc
        await self._http.start()

    async def send(self, event: AlertEvent) -> None:
        body = json.dumps(alertmanager_body([event], self.name, self._external_url)).encode()
        # at-least-once delivery: the event id lets a receiver drop the rare repeat (a crash
        # between the target's 2xx and sensord recording it)
        headers = {EVENT_ID_HEADER: event.event_id}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        await self._http.post(body, headers)

    async def close(self) -> None:
        await self._http.close()


class SlackChannel:
    """A Slack (or Mattermost, Rocket.Chat) incoming webhook: `{"text": …}`."""

    def __init__(self, settings: SlackChannelSettings) -> None:
        self.name = settings.name
        self._template = settings.template
        self._http = HttpPoster(settings.url, settings.timeout)

    async def start(self) -> None:
        await self._http.start()

    async def send(self, event: AlertEvent) -> None:
        text = render(self._template, event, self.name)
        await self._http.post(json.dumps({"text": text}).encode(), {})

    async def close(self) -> None:
        await self._http.close()


def _webhook(settings: WebhookChannelSettings, context: ChannelContext) -> WebhookChannel:
    secret = context.resolve_optional(settings.hmac_secret_file)
    return WebhookChannel(settings, context.external_url, secret)


def _slack(settings: SlackChannelSettings, context: ChannelContext) -> SlackChannel:
    return SlackChannel(settings)


register("webhook", WebhookChannelSettings, _webhook)
register("slack", SlackChannelSettings, _slack)
