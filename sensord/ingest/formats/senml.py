"""SenML (RFC 8428): format "senml" (JSON and CBOR packs), and the pack decoder of "sensord".

A pack resolves as RFC 8428 §4.6 says: the base fields (bn, bt, bu, bv, bs) apply to their
record and every later one until a record sets them again; name = bn + n, time = bt + t
(below 2**28 relative to the receive time, §4.5.3), unit = u else bu, value = bv + v,
sum = bs + s (a sum exists when s or bs does). `bver` above 10 (the version of RFC 8428)
refuses the pack (§4.4: the receiver "MUST NOT use" it), and so does a label ending in `_`
(§4.4: must-understand); other unknown labels, and `ut` (update time), are ignored.

The name (bn + n) overrides the topic's device and kind (`senml_device_kind`). A record
whose value is text (`vs`) or data (`vd`) is skipped and counted in the "senml" format's
`skipped` (reasons `text`, `data`); the "sensord" format, which counts no skipped fields,
refuses such a pack as it always has. See docs/formats/senml.md.

SenML CBOR (§6, application/senml+cbor): the same records with integer labels, decoded with
cbor2. MQTT 3.1.1 carries no content type, so the "senml" format tells the two apart by the
first byte (option `encoding`, default "auto"): a CBOR array (0x80-0x9f) or the CBOR
self-describe tag (0xd9 0xd9 0xf7) is CBOR, anything else JSON.
"""

from __future__ import annotations

import math
from typing import ClassVar

import cbor2

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._fields import TopicFormat, loads_json, skew_error
from sensord.ingest.formats._fields import number as _number
from sensord.ingest.formats._fields import unit as _unit
from sensord.ingest.reasons import NON_FINITE, NOT_JSON, SCHEMA, TOO_LARGE

SENML_VERSION = 10  # RFC 8428 §4.4: the version this decoder implements (the default bver)
_SENML_RELATIVE = 2**28  # RFC 8428 §4.5.3: smaller times are relative to now
_SENML_SEPARATORS = ("/", ":")
_BASE_ONLY = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
_KNOWN = frozenset({*_BASE_ONLY, "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
_PLAIN = frozenset({"n", "u", "v", "vb", "t"})  # the fields of the usual record

# RFC 8428 §6, table 4: the CBOR labels of the fields
CBOR_LABELS: dict[int, str] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}
_CBOR_SELF_DESCRIBE = b"\xd9\xd9\xf7"  # RFC 8949 §3.4.6, tag 55799

SKIP_TEXT = "text"  # a record whose value is a string (vs)
SKIP_DATA = "data"  # a record whose value is data (vd)

# The kind of a record whose name names a device only (`urn:dev:ow:10e2073a01080063`,
# `room-1/`), from its unit: RFC 8428 §12.1's units, after the shared kinds. RFC 8428 §5.1.3
# sends humidity, longitude, latitude and battery under one such name, told apart by unit.
UNIT_KINDS: dict[str, str] = {
    "Cel": "temperature",
    "K": "temperature",
    "%RH": "humidity",
    "Pa": "pressure",
    "hPa": "pressure",
    "lx": "illuminance",
    "V": "voltage",
    "A": "current",
    "W": "power",
    "VA": "apparent_power",
    "var": "reactive_power",
    "J": "energy",
    "Wh": "energy",
    "kWh": "energy",
    "Hz": "frequency",
    "%EL": "battery",
    "lat": "latitude",
    "lon": "longitude",
    "dBm": "signal_strength",
    "dBW": "signal_strength",
    "m": "distance",
    "m/s": "speed",
    "kg": "weight",
    "ppm": "co2",
}

ENCODINGS = ("auto", "json", "cbor")


@register("senml")
class SenmlFormat(TopicFormat):
    """SenML packs (JSON or CBOR) and nothing else (no bare number, no object)."""

    # no firmware of its own: the layout of the simulated device, with the topic template
    # `senml/{site}/{device}/{kind}` (docs/formats/senml.md)
    default_topics: tuple[str, ...] = ("senml/#",)
    # a [[mqtt.sources]] table of this format without topic_template names sensors so
    default_topic_template: ClassVar[str] = "senml/{site}/{device}/{kind}"
    known_options = frozenset({"encoding"})

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        self.skipped: dict[str, int] = {}
        encoding = options.options.get("encoding", "auto")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding: must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        self.encoding = str(encoding)

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        site, device, kind, extra = self.topics.labels(topic)
        encoding = self.encoding
        if encoding == "cbor" or (encoding == "auto" and is_cbor(payload)):
            data: list[object] = loads_cbor(payload)
        else:
            text = loads_json(payload, "senml: payload is not JSON")
            if not isinstance(text, list):
                raise PayloadError(
                    SCHEMA, f"senml: a pack is a JSON array of records, got {type(text).__name__}"
                )
            data = text
        return decode_pack(self, data, site, device, kind, extra, now, self.skipped)


def is_cbor(payload: bytes | bytearray) -> bool:
    """A CBOR array's first byte (major type 4), or the self-describe tag: never JSON text,
    whose first byte is `[`, whitespace or a UTF-8 BOM."""
    return bool(payload) and (0x80 <= payload[0] <= 0x9F or payload[:3] == _CBOR_SELF_DESCRIBE)


def loads_cbor(payload: bytes | bytearray) -> list[object]:
    """A SenML CBOR pack -> records with the JSON labels (integer labels translated)."""
    if payload[:3] == _CBOR_SELF_DESCRIBE:
        payload = payload[3:]  # cbor2 would decode what the tag holds as immutable types
    try:
        data: object = cbor2.loads(payload)
    except Exception:  # noqa: BLE001 - cbor2 raises many types on hostile input (tags, depth)
        raise PayloadError(NOT_JSON, "senml: payload is not CBOR") from None
    if not isinstance(data, list):
        raise PayloadError(
            SCHEMA, f"senml: a pack is a CBOR array of records, got {type(data).__name__}"
        )
    records: list[object] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise PayloadError(SCHEMA, f"SenML record {i} is not a map")
        out: dict[str, object] = {}
        for label, value in rec.items():
            if isinstance(label, int) and not isinstance(label, bool):
                name = CBOR_LABELS.get(label)
                if name is not None:
                    out[name] = value
                # other integer labels: unknown fields, ignored (§4.4)
            elif isinstance(label, str):
                out[label] = value  # §6: fields without a CBOR label keep their JSON label
            else:
                raise PayloadError(SCHEMA, f"SenML record {i}: a label must be int or text")
        if isinstance(out.get("vd"), bytes | bytearray):
            out["vd"] = ""  # CBOR data values are byte strings; JSON's are base64url text
        records.append(out)
    return records


def decode_pack(  # noqa: PLR0915, PLR0917 - one flat loop: the hot path
    fmt: TopicFormat,
    records: list[object],
    site: str,
    device: str,
    kind: str,
    extra: dict[str, str],
    now: float,
    skipped: dict[str, int] | None = None,
) -> list[Reading]:
    """RFC 8428 pack -> Readings, resolved as §4.6 says.

    `skipped` None (format "sensord"): a record of text or data refuses the pack, and so
    does a pack with no reading. A dict (format "senml"): such records are counted in it
    by reason and skipped; a pack of them alone gives [].
    """
    if not records:
        raise PayloadError(SCHEMA, "empty SenML pack")
    bn, bt, bu, bv = "", 0.0, None, 0.0
    bs: float | None = None
    bver: float | None = None
    out: list[Reading] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise PayloadError(SCHEMA, f"SenML record {i} is not an object")
        text: str | None = None  # "vs" or "vd": a record of no numeric value
        if rec.keys() <= _PLAIN:  # the usual record: no base field, no text, no sum
            has_sum = bs is not None
        else:
            if not _KNOWN.issuperset(rec):
                for label in rec:
                    if isinstance(label, str) and label.endswith("_"):
                        raise PayloadError(
                            SCHEMA, f"SenML record {i}: must-understand field {label[:20]!r}"
                        )
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
            if "bs" in rec:
                bs = _number(rec["bs"], f"SenML record {i}: bs")
            if "bver" in rec:
                version = _number(rec["bver"], f"SenML record {i}: bver")
                if version > SENML_VERSION:
                    raise PayloadError(
                        SCHEMA, f"SenML version {version:g} > {SENML_VERSION}, not supported"
                    )
                if bver is not None and version != bver:
                    raise PayloadError(SCHEMA, f"SenML record {i}: bver differs within the pack")
                bver = version
            for label in ("vs", "vd"):
                if label in rec:
                    if text is not None or "v" in rec or "vb" in rec:
                        raise PayloadError(SCHEMA, f"SenML record {i} has more than one value")
                    if not isinstance(rec[label], str):
                        raise PayloadError(SCHEMA, f"SenML record {i}: {label} must be a string")
                    if skipped is None:
                        raise PayloadError(
                            SCHEMA,
                            f"SenML record {i} has no numeric value ({label}; format senml "
                            "skips it)",
                        )
                    text = label
            has_sum = "s" in rec or bs is not None
        value: float | None
        if "v" in rec:
            if "vb" in rec:
                raise PayloadError(SCHEMA, f"SenML record {i} has more than one value")
            value = bv + _number(rec["v"], f"SenML record {i}: v")
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise PayloadError(SCHEMA, f"SenML record {i}: vb must be true or false")
            value = 1.0 if rec["vb"] else 0.0
        else:
            value = None
            if text is None and not has_sum:
                if _BASE_ONLY.issuperset(rec):
                    continue  # a record of base fields only
                raise PayloadError(
                    SCHEMA, f"SenML record {i} has no value (v, vb, vs, vd) or sum (s)"
                )
        t = bt + (_number(rec["t"], f"SenML record {i}: t") if "t" in rec else 0.0)
        ts = now + t if t < _SENML_RELATIVE else t
        if ts - now > fmt.max_clock_skew:
            raise skew_error(ts, now, fmt.max_clock_skew)
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise PayloadError(SCHEMA, f"SenML record {i}: n must be a string")
        unit = _unit(rec["u"], f"SenML record {i}: u") if "u" in rec else bu
        r_device, r_kind = senml_device_kind(bn + n, device, kind, unit)
        if value is not None:
            if fmt.conversions:
                value, r_unit = fmt.normalise(r_kind, value, unit)
            else:
                r_unit = unit
            out.append(Reading.trusted(site, r_device, r_kind, value, ts, extra, r_unit))
        elif text is not None and skipped is not None:
            reason = SKIP_TEXT if text == "vs" else SKIP_DATA
            skipped[reason] = skipped.get(reason, 0) + 1
        if has_sum:
            total = bs or 0.0
            if "s" in rec:
                total += _number(rec["s"], f"SenML record {i}: s")
            if not math.isfinite(total):
                raise PayloadError(NON_FINITE, f"SenML record {i}: bs + s is not finite")
            # §4.2: a sum is in the record's unit times seconds; a kind of its own
            s_kind, s_unit = r_kind + "_sum", f"{unit}·s" if unit else None
            if fmt.conversions:
                total, s_unit = fmt.normalise(s_kind, total, s_unit)
            out.append(Reading.trusted(site, r_device, s_kind, total, ts, extra, s_unit))
    if not out and skipped is None:
        raise PayloadError(SCHEMA, "SenML pack has no record with a value")
    return out


def senml_device_kind(
    name: str, device: str, kind: str, unit: str | None = None
) -> tuple[str, str]:
    """The SenML name (bn + n) overrides the topic's labels.

    Empty: the topic's device and kind. No `/` or `:` in it: it is the kind. Otherwise it is
    split at the last `/` or `:`: device before it (unless empty), kind after it (unless
    empty), e.g. `urn:dev:ow:10e2073a:temp` -> device `urn:dev:ow:10e2073a`, kind `temp`.

    A name that names a device only, ending in `/` or `:` or a bare device URN
    (`urn:dev:<type>:<id>`, RFC 9039), keeps it whole as the device and takes its kind from
    the unit (`UNIT_KINDS`), else from the topic.
    """
    if not name:
        return device, kind
    if name.startswith("urn:dev:") and name.count(":") == 3 and "/" not in name:
        return name, UNIT_KINDS.get(unit, kind) if unit else kind
    cut = max(name.rfind(sep) for sep in _SENML_SEPARATORS)
    if cut < 0:
        return device, name
    if cut == len(name) - 1:
        return name[:cut] or device, UNIT_KINDS.get(unit, kind) if unit else kind
    return name[:cut] or device, name[cut + 1 :]
