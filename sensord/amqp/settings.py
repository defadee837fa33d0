"""Settings of the RabbitMQ connection and the names derived from its prefix: `[amqp]`."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from sensord.ops.settings import Duration, Section


class AmqpSettings(Section):
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    prefix: str = "sensord"
    reconnect_interval: float = Field(default=2.0, gt=0)
    publish_timeout: float = Field(default=10.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1)
    # on SIGTERM: keep trying to publish held alert events for up to this long
    stop_grace: Duration = 5.0

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("only letters, digits, '_', '-' and '.' are allowed")
        return v

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.alerts"

    def notify_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}"

    def dead_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}.dead"
