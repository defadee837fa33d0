"""What every settings section is built from: a strict frozen model and durations.

A leaf module (pydantic only), so that each stage's `settings.py` and the pure rule core
can use it without importing the loader (`sensord.ops.config`) and every stage with it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """`"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit, e.g. '5s', '2m'")
    if not math.isfinite(seconds):  # TOML nan/inf, YAML .nan/.inf, or a huge digit string
        raise ValueError(f"invalid duration {value!r}: must be finite")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


# a float of seconds, written as a number or text with a unit ("500ms", "5s", "2m")
Duration = Annotated[float, BeforeValidator(parse_duration)]


class Section(BaseModel):
    """One table of the config file: unknown keys are errors, values are read-only."""

    # coerce_numbers_to_str: env values parse as JSON, so SENSORD_MQTT__CLIENT_ID=123 is an int
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
