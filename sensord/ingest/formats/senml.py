"""SenML (RFC 8428) JSON packs: format "senml", and the pack decoder of format "sensord".

Base fields (bn, bt, bu, bv) apply to their record and every later one; the name (bn + n)
overrides the topic's device and kind (`senml_device_kind`).
"""

from __future__ import annotations

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import register
from sensord.ingest.formats._fields import TopicFormat, loads_json, skew_error
from sensord.ingest.formats._fields import number as _number
from sensord.ingest.formats._fields import unit as _unit
from sensord.ingest.reasons import SCHEMA, TOO_LARGE

_SENML_RELATIVE = 2**28  # RFC 8428 §4.5.3: smaller times are relative to now
_SENML_SEPARATORS = ("/", ":")
_BASE_ONLY = frozenset({"bn", "bt", "bu", "bv", "bver"})


@register("senml")
class SenmlFormat(TopicFormat):
    """A JSON array of SenML records, and nothing else (no bare number, no object)."""

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        site, device, kind, extra = self.topics.labels(topic)
        data = loads_json(payload, "senml: payload is not JSON")
        if not isinstance(data, list):
            raise PayloadError(
                SCHEMA, f"senml: a pack is a JSON array of records, got {type(data).__name__}"
            )
        return decode_pack(self, data, site, device, kind, extra, now)


def decode_pack(  # noqa: PLR0917 - the topic's labels, passed on as they are
    fmt: TopicFormat,
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
        elif len(rec.keys() - _BASE_ONLY) == 0:
            continue  # a record of base fields only
        else:
            raise PayloadError(SCHEMA, f"SenML record {i} has no numeric value (v or vb)")
        t = bt + (_number(rec["t"], f"SenML record {i}: t") if "t" in rec else 0.0)
        ts = now + t if t < _SENML_RELATIVE else t
        if ts - now > fmt.max_clock_skew:
            raise skew_error(ts, now, fmt.max_clock_skew)
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise PayloadError(SCHEMA, f"SenML record {i}: n must be a string")
        name = bn + n
        r_device, r_kind = senml_device_kind(name, device, kind)
        unit = _unit(rec["u"], f"SenML record {i}: u") if "u" in rec else bu
        if fmt.conversions:
            value, unit = fmt.normalise(r_kind, value, unit)
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
