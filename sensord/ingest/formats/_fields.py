"""What payload formats share: the checks of numbers, units and timestamps (with their
reason codes and texts), JSON decoding, and `TopicFormat`, the base of topic-named formats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from sensord.errors import PayloadError
from sensord.ingest.formats import FormatOptions
from sensord.ingest.reasons import CLOCK_SKEW, NON_FINITE, NOT_JSON, SCHEMA, UNIT
from sensord.ingest.topics import TopicTemplates
from sensord.ingest.units import Conversion

MS_THRESHOLD = 100_000_000_000  # epoch numbers above this are milliseconds (after 1973)
JSON_WS = " \t\n\r"
# json.loads' own scanner: raises StopIteration on empty or invalid input
scan: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in typeshed


class TopicFormat:
    """Base of the formats whose topic names the sensor: labels from the topic templates,
    the payload size bound, the clock-skew bound and the `[ingest.units]` conversions."""

    known_options: ClassVar[frozenset[str]] = frozenset()  # the format's own option keys

    def __init__(self, options: FormatOptions) -> None:
        unknown = sorted(set(options.options) - self.known_options)
        if unknown:
            known = ", ".join(sorted(self.known_options)) or "none"
            raise ValueError(f"unknown option {unknown[0]!r} (this format's options: {known})")
        self.topics = TopicTemplates(options.topic_template)
        self.max_payload = options.max_payload
        self.max_clock_skew = options.max_clock_skew
        self.conversions = {kind: Conversion(unit) for kind, unit in options.units.items()}

    def normalise(self, kind: str, value: float, unit: str | None) -> tuple[float, str | None]:
        conversion = self.conversions.get(kind)
        if conversion is None:
            return value, unit
        if unit is None:  # no unit given: the sensor is taken to report the target unit
            return value, conversion.target.name
        factors = conversion.factors(unit)
        if factors is None:
            raise PayloadError(
                UNIT, f"unit {unit[:20]!r} cannot be converted to {conversion.target.name!r}"
            )
        scale, offset = factors
        return value * scale + offset, conversion.target.name


def loads_json(payload: bytes | bytearray, not_json: str) -> object:
    """UTF-8 JSON (a BOM allowed), or PayloadError(NOT_JSON, not_json).

    The "sensord" format inlines this (its hot path); keep the two the same.
    """
    try:
        # decode first: json.loads(bytes) would also accept UTF-16/32 and lone surrogates
        # (and the C utf-8 codec, then dropping a BOM, is ~4x cheaper than utf-8-sig)
        text = payload.decode("utf-8")
        if text.startswith("\ufeff"):
            text = text[1:]
        # json.loads minus its two whitespace regex matches: strip JSON whitespace only
        text = text.strip(JSON_WS)
        data, end = scan(text, 0)
        if end != len(text):
            raise ValueError("extra data")
    except (ValueError, UnicodeDecodeError, StopIteration, RecursionError):
        # RecursionError: a payload nested ~1000 deep
        raise PayloadError(NOT_JSON, not_json) from None
    return data


def parse_ts(raw: object, now: float) -> float:
    if raw is None:
        return now
    if isinstance(raw, bool):
        raise PayloadError(SCHEMA, "ts must be RFC 3339 text or epoch seconds/milliseconds")
    if isinstance(raw, int | float):
        ts = finite(raw, "ts")
        return ts / 1000.0 if ts > MS_THRESHOLD else ts
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError(SCHEMA, f"ts {raw[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise PayloadError(SCHEMA, f"ts {raw[:40]!r} has no time zone")
        return dt.timestamp()
    raise PayloadError(SCHEMA, "ts must be RFC 3339 text or epoch seconds/milliseconds")


def finite(raw: int | float, what: str) -> float:
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer too large for a double, e.g. 1 followed by 400 zeros
        raise PayloadError(NON_FINITE, f"{what} is not a finite number") from None
    if not math.isfinite(value):
        raise PayloadError(NON_FINITE, f"{what} is not a finite number")
    return value


def number(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError(SCHEMA, f"{what} must be a number, got {type(raw).__name__}")
    return finite(raw, what)


def unit(raw: object, what: str) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise PayloadError(SCHEMA, f"{what} must be a string")
    return raw


def skew_error(ts: float, now: float, limit: float) -> PayloadError:
    return PayloadError(
        CLOCK_SKEW, f"ts is {ts - now:.0f}s ahead of the receive time (max_clock_skew {limit:g}s)"
    )
