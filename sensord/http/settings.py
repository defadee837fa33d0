"""Settings of sensord's HTTP server: `[http]` (listen address, token, status page history)."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator, model_validator

from sensord.ops.settings import Duration, Section


class HttpSettings(Section):
    listen: str = "127.0.0.1:9300"
    # bearer token for mutations (ack, silences); without it they are refused
    token_file: Path | None = None
    # the status page's recent history per sensor (in memory): how far back, how coarse
    history_window: Duration = 3600.0
    history_step: Duration = 30.0
    # a sensor no deadman rule covers is marked silent on the page after this long
    silent_after: Duration = 300.0

    @model_validator(mode="after")
    def _check_history(self) -> HttpSettings:
        if self.history_step <= 0:
            raise ValueError("history_step must be longer than 0s")
        if self.history_window < self.history_step:
            raise ValueError("history_window must be at least history_step")
        if self.history_window / self.history_step > 1440:
            raise ValueError(
                "history_window / history_step must be at most 1440 buckets per sensor"
            )
        if self.silent_after <= 0:
            raise ValueError("silent_after must be longer than 0s")
        return self

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        if v == "":
            return v  # disabled
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError('must be host:port, e.g. 127.0.0.1:9300 (or "" to disable)')
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
