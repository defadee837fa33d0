"""Format "sensord": a JSON object `{"value": …, "ts": …, "unit": …}`, a bare number, or
a SenML pack (JSON, or CBOR: RFC 8428 §6), told apart by the JSON's shape (CBOR by its first
byte, which no UTF-8 text starts with); site, device and kind from the topic.
"""

from __future__ import annotations

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import register
from sensord.ingest.formats._fields import JSON_WS, TopicFormat, parse_ts, scan, skew_error
from sensord.ingest.formats._fields import number as _number
from sensord.ingest.formats._fields import unit as _unit
from sensord.ingest.formats.senml import decode_pack, is_cbor, loads_cbor
from sensord.ingest.reasons import NOT_JSON, SCHEMA, TOO_LARGE


@register("sensord")
class NativeFormat(TopicFormat):
    """sensord's own payloads; the format of `[mqtt] topics` and of sensord-sim."""

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        site, device, kind, extra = self.topics.labels(topic)
        try:
            # _fields.loads_json, inlined: this is the per-message path of every reading
            text = payload.decode("utf-8")
            if text.startswith("\ufeff"):
                text = text[1:]
            text = text.strip(JSON_WS)
            data, end = scan(text, 0)
            if end != len(text):
                raise ValueError("extra data")
        except (ValueError, UnicodeDecodeError, StopIteration, RecursionError):
            # a SenML CBOR pack starts with a byte no UTF-8 text starts with: tried only
            # here, after JSON failed, so that it costs the JSON path nothing
            if is_cbor(payload):
                return decode_pack(self, loads_cbor(payload), site, device, kind, extra, now)
            raise PayloadError(NOT_JSON, "payload is neither JSON nor a number") from None
        if isinstance(data, dict):
            if "value" not in data:
                raise PayloadError(SCHEMA, "JSON object has no 'value'")
            value = _number(data["value"], "value")
            ts = parse_ts(data.get("ts"), now)
            unit = _unit(data.get("unit"), "unit")
        elif isinstance(data, list):
            return decode_pack(self, data, site, device, kind, extra, now)
        else:
            value = _number(data, "payload")
            ts = now
            unit = None
        if ts - now > self.max_clock_skew:
            raise skew_error(ts, now, self.max_clock_skew)
        if self.conversions:
            value, unit = self.normalise(kind, value, unit)
        return [Reading.trusted(site, device, kind, value, ts, extra, unit)]
