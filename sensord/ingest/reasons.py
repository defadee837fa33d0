"""Why a message was refused: stable codes, counted in sensord_readings_invalid_total{reason}.

A contract (metrics, quarantine, sensord-sim's faults): a new payload format reuses these
codes and says what is wrong, and in which format, in the PayloadError's detail.
"""

from __future__ import annotations

NOT_JSON = "not_json"
SCHEMA = "schema"
TOPIC = "topic"
NON_FINITE = "non_finite"
TOO_LARGE = "too_large"
CLOCK_SKEW = "clock_skew"
UNIT = "unit"
REASONS = (NOT_JSON, SCHEMA, TOPIC, NON_FINITE, TOO_LARGE, CLOCK_SKEW, UNIT)
