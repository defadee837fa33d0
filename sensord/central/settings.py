"""Settings of a central rules process (`--role rules`): `[central]` (docs/central.md)."""

from __future__ import annotations

from pydantic import Field, field_validator

from sensord.ops.settings import Duration, Section, parse_duration

STARTS = ("first", "last", "next")


class CentralSettings(Section):
    # where a partition that has no checkpoint yet starts: first | last | next, or a
    # duration back from now ("10m": the readings of the last ten minutes)
    start: str = "next"
    # how often the owner of a partition publishes its checkpoint (offset and alert
    # state) for whoever takes the partition over
    checkpoint_interval: Duration = 1.0
    # how often a partition that another process holds is tried again
    lock_retry: Duration = 1.0
    # stream messages in flight per partition (basic.qos)
    prefetch: int = Field(default=50, ge=1, le=10_000)

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        if v not in STARTS:
            try:
                seconds = parse_duration(v)
            except ValueError:
                raise ValueError(
                    f"start must be first, last, next or a duration like 10m, not {v!r}"
                ) from None
            if seconds <= 0:
                raise ValueError("start: a duration back from now must be longer than 0s")
        return v

    @field_validator("checkpoint_interval", "lock_retry")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be longer than 0s")
        return v
