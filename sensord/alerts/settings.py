"""Settings of the alert lifecycle: `[alerts]` (repeats) and its `[[alerts.inhibit]]` rules."""

from __future__ import annotations

from pydantic import Field, field_validator

from sensord.alerts.silences import Matcher
from sensord.ops.settings import Duration, Section


class InhibitSettings(Section):
    source: list[str] = Field(min_length=1)
    target: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source", "target")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        for text in v:
            Matcher.parse(text)
        return v


class AlertsSettings(Section):
    # re-announce a firing alert that is not acknowledged this often; 0 disables
    repeat_interval: Duration = 4 * 3600.0
    inhibit: list[InhibitSettings] = Field(default_factory=list)
