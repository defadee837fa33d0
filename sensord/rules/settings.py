"""Settings of the rule engine: `[rules]` (which files, how often timers tick)."""

from __future__ import annotations

from pydantic import Field

from sensord.ops.settings import Duration, Section


class RulesSettings(Section):
    paths: list[str] = Field(default_factory=lambda: ["rules/*.yaml"])
    tick: float = Field(default=1.0, gt=0, le=60)
    # a downtime longer than this restarts `for` timers and deadman clocks (restore)
    outage_tolerance: Duration = 3600.0
