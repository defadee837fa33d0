"""Settings of the state file: `[state]`."""

from __future__ import annotations

from pathlib import Path

from sensord.ops.settings import Section


class StateSettings(Section):
    path: Path = Path("var/sensord.db")
