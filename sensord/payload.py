"""Topic and payload parsing: bytes off MQTT -> Reading, or PayloadError with a reason code.

This is the per-message hot path: no logging, no copies beyond what json needs, topic
labels cached per topic.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from sensord.errors import PayloadError
from sensord.events import Reading

# Stable reason codes, counted in sensord_readings_invalid_total{reason}.
NOT_JSON = "not_json"
SCHEMA = "schema"
TOPIC = "topic"
NON_FINITE = "non_finite"
TOO_LARGE = "too_large"
REASONS = (NOT_JSON, SCHEMA, TOPIC, NON_FINITE, TOO_LARGE)

_MS_THRESHOLD = 100_000_000_000  # epoch numbers above this are milliseconds (after 1973)
_TOPIC_CACHE_MAX = 100_000

_Labels = tuple[str, str, str, dict[str, str]]


class TopicTemplate:
    """`sensors/{site}/{device}/{kind}` -> labels; literal segments must match exactly."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts: list[tuple[bool, str]] = []
        for seg in template.split("/"):
            if seg.startswith("{") and seg.endswith("}"):
                self._parts.append((True, seg[1:-1]))
            else:
                self._parts.append((False, seg))
        self._cache: dict[str, _Labels] = {}

    def labels(self, topic: str) -> _Labels:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        segs = topic.split("/")
        if len(segs) != len(self._parts):
            raise PayloadError(TOPIC, f"topic {topic!r} does not match {self.template!r}")
        found: dict[str, str] = {}
        for (named, name), seg in zip(self._parts, segs, strict=True):
            if named:
                if not seg:
                    raise PayloadError(TOPIC, f"topic {topic!r}: empty {{{name}}} segment")
                found[name] = seg
            elif seg != name:
                raise PayloadError(TOPIC, f"topic {topic!r} does not match {self.template!r}")
        site, device, kind = found.pop("site"), found.pop("device"), found.pop("kind")
        result = (site, device, kind, found)
        if len(self._cache) >= _TOPIC_CACHE_MAX:
            self._cache.clear()  # bounded: a flood of random topics cannot grow memory
        self._cache[topic] = result
        return result


def parse_ts(raw: object, now: float) -> float:
    if raw is None:
        return now
    if isinstance(raw, bool):
        raise PayloadError(SCHEMA, "ts must be RFC 3339 text or epoch seconds/milliseconds")
    if isinstance(raw, int | float):
        try:
            ts = float(raw)
        except OverflowError:  # a JSON integer too large for a double
            raise PayloadError(NON_FINITE, "ts is not a finite number") from None
        if not math.isfinite(ts):
            raise PayloadError(NON_FINITE, "ts is not a finite number")
        return ts / 1000.0 if ts > _MS_THRESHOLD else ts
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError(SCHEMA, f"ts {raw[:40]!r} is not RFC 3339") from None
        if dt.tzinfo is None:
            raise PayloadError(SCHEMA, f"ts {raw[:40]!r} has no time zone")
        return dt.timestamp()
    raise PayloadError(SCHEMA, "ts must be RFC 3339 text or epoch seconds/milliseconds")


def _number(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError(SCHEMA, f"{what} must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer too large for a double, e.g. 1 followed by 400 zeros
        raise PayloadError(NON_FINITE, f"{what} is not a finite number") from None
    if not math.isfinite(value):
        raise PayloadError(NON_FINITE, f"{what} is not a finite number")
    return value


class PayloadParser:
    def __init__(self, template: str, max_payload: int) -> None:
        self.topics = TopicTemplate(template)
        self.max_payload = max_payload

    def parse(self, topic: str, payload: bytes, now: float) -> Reading:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        site, device, kind, extra = self.topics.labels(topic)
        try:
            # decode first: json.loads(bytes) would also accept UTF-16/32 and lone surrogates
            data = json.loads(payload.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            raise PayloadError(NOT_JSON, "payload is neither JSON nor a number") from None
        if isinstance(data, dict):
            if "value" not in data:
                raise PayloadError(SCHEMA, "JSON object has no 'value'")
            value = _number(data["value"], "value")
            ts = parse_ts(data.get("ts"), now)
            unit = data.get("unit")
            if unit is not None and not isinstance(unit, str):
                raise PayloadError(SCHEMA, "unit must be a string")
        else:
            value = _number(data, "payload")
            ts = now
            unit = None
        return Reading.trusted(site, device, kind, value, ts, extra, unit)
