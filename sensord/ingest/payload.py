"""Topic and payload parsing: bytes off MQTT -> Readings, or PayloadError with a reason code.

This is the per-message hot path: no logging, no copies beyond what json needs, topic
labels cached per topic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.units import Conversion

# Stable reason codes, counted in sensord_readings_invalid_total{reason}.
NOT_JSON = "not_json"
SCHEMA = "schema"
TOPIC = "topic"
NON_FINITE = "non_finite"
TOO_LARGE = "too_large"
CLOCK_SKEW = "clock_skew"
UNIT = "unit"
REASONS = (NOT_JSON, SCHEMA, TOPIC, NON_FINITE, TOO_LARGE, CLOCK_SKEW, UNIT)

_MS_THRESHOLD = 100_000_000_000  # epoch numbers above this are milliseconds (after 1973)
_SENML_RELATIVE = 2**28  # RFC 8428 §4.5.3: smaller times are relative to now
_TOPIC_CACHE_MAX = 100_000
_SENML_SEPARATORS = ("/", ":")
_JSON_WS = " \t\n\r"
# json.loads' own scanner: raises StopIteration on empty or invalid input
_scan: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in typeshed

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

    def match(self, topic: str, segs: list[str]) -> _Labels | str:
        """Labels, or why the topic does not match."""
        if len(segs) != len(self._parts):
            return f"topic {topic!r} does not match {self.template!r}"
        found: dict[str, str] = {}
        for (named, name), seg in zip(self._parts, segs, strict=True):
            if named:
                if not seg:
                    return f"topic {topic!r}: empty {{{name}}} segment"
                found[name] = seg
            elif seg != name:
                return f"topic {topic!r} does not match {self.template!r}"
        site, device, kind = found.pop("site"), found.pop("device"), found.pop("kind")
        return (site, device, kind, found)


class TopicTemplates:
    """One or more templates, tried in order: the first that matches names the labels."""

    def __init__(self, templates: str | Sequence[str]) -> None:
        names = [templates] if isinstance(templates, str) else list(templates)
        self.templates = [TopicTemplate(t) for t in names]
        self._cache: dict[str, _Labels] = {}

    def labels(self, topic: str) -> _Labels:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        segs = topic.split("/")
        why = ""
        for template in self.templates:
            result = template.match(topic, segs)
            if isinstance(result, str):
                why = why or result
                continue
            if len(self._cache) >= _TOPIC_CACHE_MAX:
                self._cache.clear()  # bounded: a flood of random topics cannot grow memory
            self._cache[topic] = result
            return result
        if len(self.templates) > 1:
            why = f"topic {topic!r} matches none of the {len(self.templates)} topic templates"
        raise PayloadError(TOPIC, why)


def parse_ts(raw: object, now: float) -> float:
    if raw is None:
        return now
    if isinstance(raw, bool):
        raise PayloadError(SCHEMA, "ts must be RFC 3339 text or epoch seconds/milliseconds")
    if isinstance(raw, int | float):
        ts = _finite(raw, "ts")
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


def _finite(raw: int | float, what: str) -> float:
    try:
        value = float(raw)
    except OverflowError:  # a JSON integer too large for a double, e.g. 1 followed by 400 zeros
        raise PayloadError(NON_FINITE, f"{what} is not a finite number") from None
    if not math.isfinite(value):
        raise PayloadError(NON_FINITE, f"{what} is not a finite number")
    return value


def _number(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError(SCHEMA, f"{what} must be a number, got {type(raw).__name__}")
    return _finite(raw, what)


def _unit(raw: object, what: str) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise PayloadError(SCHEMA, f"{what} must be a string")
    return raw


class PayloadParser:
    """Topic + payload -> Readings (one, or one per SenML record).

    `units` maps a kind to the unit its readings are converted to; `max_clock_skew`
    refuses timestamps more than that many seconds ahead of the receive time.
    """

    def __init__(
        self,
        template: str | Sequence[str],
        max_payload: int,
        *,
        units: Mapping[str, str] | None = None,
        max_clock_skew: float = 300.0,
    ) -> None:
        self.topics = TopicTemplates(template)
        self.max_payload = max_payload
        self.max_clock_skew = max_clock_skew
        self._units = {kind: Conversion(unit) for kind, unit in (units or {}).items()}

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        site, device, kind, extra = self.topics.labels(topic)
        try:
            # decode first: json.loads(bytes) would also accept UTF-16/32 and lone surrogates
            # (and the C utf-8 codec, then dropping a BOM, is ~4x cheaper than utf-8-sig)
            text = payload.decode("utf-8")
            if text.startswith("\ufeff"):
                text = text[1:]
            # json.loads minus its two whitespace regex matches: strip JSON whitespace only
            text = text.strip(_JSON_WS)
            data, end = _scan(text, 0)
            if end != len(text):
                raise ValueError("extra data")
        except (ValueError, UnicodeDecodeError, StopIteration):
            raise PayloadError(NOT_JSON, "payload is neither JSON nor a number") from None
        if isinstance(data, dict):
            if "value" not in data:
                raise PayloadError(SCHEMA, "JSON object has no 'value'")
            value = _number(data["value"], "value")
            ts = parse_ts(data.get("ts"), now)
            unit = _unit(data.get("unit"), "unit")
        elif isinstance(data, list):
            return self._senml(data, site, device, kind, extra, now)
        else:
            value = _number(data, "payload")
            ts = now
            unit = None
        if ts - now > self.max_clock_skew:
            raise PayloadError(CLOCK_SKEW, _skew_detail(ts, now, self.max_clock_skew))
        if self._units:
            value, unit = self._normalise(kind, value, unit)
        return [Reading.trusted(site, device, kind, value, ts, extra, unit)]

    def _normalise(self, kind: str, value: float, unit: str | None) -> tuple[float, str | None]:
        conversion = self._units.get(kind)
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

    def _senml(  # noqa: PLR0917 - the topic's labels, passed on as they are
        self,
        records: list[object],
        site: str,
        device: str,
        kind: str,
        extra: dict[str, str],
        now: float,
    ) -> list[Reading]:
        """RFC 8428 pack: base fields apply to their record and every later one."""
        if not records:
            raise PayloadError(SCHEMA, "empty SenML pack")
        bn, bt, bu, bv = "", 0.0, None, 0.0
        out: list[Reading] = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise PayloadError(SCHEMA, f"SenML record {i} is not an object")
            if "bn" in rec:
                if not isinstance(rec["bn"], str):
                    raise PayloadError(SCHEMA, f"SenML record {i}: bn must be a string")
                bn = rec["bn"]
            if "bt" in rec:
                bt = _number(rec["bt"], f"SenML record {i}: bt")
            if "bu" in rec:
                bu = _unit(rec["bu"], f"SenML record {i}: bu")
            if "bv" in rec:
                bv = _number(rec["bv"], f"SenML record {i}: bv")
            if "v" in rec:
                value = bv + _number(rec["v"], f"SenML record {i}: v")
            elif "vb" in rec:
                if not isinstance(rec["vb"], bool):
                    raise PayloadError(SCHEMA, f"SenML record {i}: vb must be true or false")
                value = 1.0 if rec["vb"] else 0.0
            elif len(rec.keys() - {"bn", "bt", "bu", "bv", "bver"}) == 0:
                continue  # a record of base fields only
            else:
                raise PayloadError(SCHEMA, f"SenML record {i} has no numeric value (v or vb)")
            t = bt + (_number(rec["t"], f"SenML record {i}: t") if "t" in rec else 0.0)
            ts = now + t if t < _SENML_RELATIVE else t
            if ts - now > self.max_clock_skew:
                raise PayloadError(CLOCK_SKEW, _skew_detail(ts, now, self.max_clock_skew))
            n = rec.get("n", "")
            if not isinstance(n, str):
                raise PayloadError(SCHEMA, f"SenML record {i}: n must be a string")
            name = bn + n
            r_device, r_kind = senml_device_kind(name, device, kind)
            unit = _unit(rec["u"], f"SenML record {i}: u") if "u" in rec else bu
            if self._units:
                value, unit = self._normalise(r_kind, value, unit)
            out.append(Reading.trusted(site, r_device, r_kind, value, ts, extra, unit))
        if not out:
            raise PayloadError(SCHEMA, "SenML pack has no record with a value")
        return out


def senml_device_kind(name: str, device: str, kind: str) -> tuple[str, str]:
    """The SenML name (bn + n) overrides the topic's labels.

    Empty: the topic's device and kind. No `/` or `:` in it: it is the kind. Otherwise it is
    split at the last `/` or `:`: device before it (unless empty), kind after it (unless
    empty), e.g. `urn:dev:ow:10e2073a:temp` -> device `urn:dev:ow:10e2073a`, kind `temp`.
    """
    if not name:
        return device, kind
    cut = max(name.rfind(sep) for sep in _SENML_SEPARATORS)
    if cut < 0:
        return device, name
    return name[:cut] or device, name[cut + 1 :] or kind


def _skew_detail(ts: float, now: float, limit: float) -> str:
    return f"ts is {ts - now:.0f}s ahead of the receive time (max_clock_skew {limit:g}s)"
