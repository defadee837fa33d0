"""Sparkplug B: the wire, the values and the state of format "sparkplug" (sparkplug.py).

- the protocol's constants: the namespace, the datatypes and the value fields they are
  read from, the format's skip reasons and options;
- the typed view of the protobuf gencode (`Payload`, `Message`, `Metric`, … as Protocols:
  the gencode itself is untyped) and `decode`;
- the state a host application keeps per edge node: `Node`, its `Device`s (the node itself
  too) and each birth metric's `Learned` datatype, kind, unit and labels;
- `SparkplugReader`, the base of `SparkplugFormat`: validates the source's options and reads
  one metric's value by its birth's datatype (`_metric`, on the per-message path; no node
  state);
- the metric-property helpers (unit, quality, bdSeq) and the rebirth request's payload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Protocol

from google.protobuf.message import (  # type: ignore[import-untyped]  # protobuf ships no hints
    DecodeError,
)

from sensord.events import Reading
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats._device import (
    SKIP_CLOCK,
    SKIP_NON_FINITE,
    SKIP_NULL,
    SKIP_TEXT,
    DeviceFormat,
)
from sensord.ingest.formats._sparkplug_b_pb2 import Payload as _Payload

NAMESPACE: Final = "spBv1.0"

# Sparkplug B 3.0 datatypes (the spec's "Datatypes" section; sparkplug_b.proto)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}  # two's complement in a uint field
UNSIGNED = frozenset({UINT8, UINT16, UINT32, UINT64})
TEXTS = frozenset({STRING, TEXT, UUID})
INT_FIELDS = frozenset({"int_value", "long_value"})  # the Metric.value oneof's members
FLOAT_FIELDS = frozenset({"float_value", "double_value"})
QUALITY_GOOD: Final = 192  # "Quality" property: 0 bad, 192 good, 500 stale

# skip reasons of this format (sensord_fields_skipped_total{reason}; docs/formats/sparkplug.md)
SKIP_SEQ_GAP = "seq_gap"  # a message whose seq is not the previous one + 1 (mod 256)
SKIP_NO_BIRTH = "no_birth"  # data (or a DBIRTH, DDEATH, NDEATH) of a node/device never born
SKIP_ALIAS = "unknown_alias"  # a metric whose alias/name the birth did not define
SKIP_UNSUPPORTED = "unsupported"  # DataSet, Template, Bytes, File, DateTime, arrays
SKIP_DATATYPE = "datatype"  # a value field that does not fit the metric's datatype
SKIP_QUALITY = "quality"  # a "Quality" property other than 192 (good)
SKIP_STALE_DEATH = "stale_death"  # an NDEATH whose bdSeq is not the NBIRTH's
SKIP_NO_NAME = "no_name"  # a birth metric without a name (or one that is not UTF-8)

REBIRTH_METRIC: Final = "Node Control/Rebirth"
_UNIT_KEYS = frozenset({"engunit", "engunits", "unit", "units"})

OPTIONS: Final = (
    "group",
    "max_aliases",
    "max_metrics",
    "rebirth",
    "rebirth_interval",
    "site_from_group",
)


class PropertyValue(Protocol):
    type: int
    int_value: int
    long_value: int
    string_value: str

    def WhichOneof(self, group: str) -> str | None: ...  # noqa: N802 - protobuf's API


class PropertySet(Protocol):
    keys: list[str]
    values: list[PropertyValue]


class Metric(Protocol):
    """The fields of `Payload.Metric` read here (the gencode itself is untyped)."""

    name: str
    alias: int
    timestamp: int
    datatype: int
    is_null: bool
    properties: PropertySet
    int_value: int
    long_value: int
    float_value: float
    double_value: float
    boolean_value: bool

    def HasField(self, field: str) -> bool: ...  # noqa: N802 - protobuf's API

    def WhichOneof(self, group: str) -> str | None: ...  # noqa: N802


class Message(Protocol):
    timestamp: int
    seq: int
    metrics: list[Metric]

    def HasField(self, field: str) -> bool: ...  # noqa: N802


Payload: Any = _Payload  # the generated class; typed through the protocols above


def decode(payload: bytes | bytearray) -> Message | None:
    """The Payload message, or None when the bytes are not one."""
    try:
        message: Message = Payload.FromString(payload)  # bytearray too, no copy
    except DecodeError:
        return None
    return message


class Learned:
    """One metric of a birth: what its data messages need."""

    __slots__ = ("control", "datatype", "kind", "labels", "unit")

    def __init__(
        self, kind: str, unit: str | None, labels: dict[str, str], datatype: int, control: bool
    ) -> None:
        self.kind = kind
        self.unit = unit
        self.labels = labels
        self.datatype = datatype
        self.control = control


class Device:
    """The node itself (device_id "") or one of its devices, as its last birth defined it."""

    __slots__ = ("by_alias", "by_name", "capped", "device", "device_id", "online")

    def __init__(self, device_id: str, device: str) -> None:
        self.device_id = device_id
        self.device = device  # the Reading's device
        self.by_alias: dict[int, Learned] = {}
        self.by_name: dict[str, Learned] = {}
        self.capped = False  # metrics of its birth were left out at the sensor cap
        self.online = True

    def size(self) -> int:
        return 1 + len(self.by_name)  # its `online` sensor and its metrics


class Node:
    __slots__ = ("bdseq", "devices", "group", "labels", "node", "seq", "site")

    def __init__(self, group: str, node: Device, labels: dict[str, str], site: str) -> None:
        self.group = group
        self.node = node
        self.labels = labels  # of its `online` readings
        self.site = site
        self.devices: dict[str, Device] = {}
        self.bdseq: int | None = None
        self.seq: int | None = None

    def aliases(self) -> int:
        return len(self.node.by_alias) + sum(len(d.by_alias) for d in self.devices.values())

    def size(self) -> int:
        return self.node.size() + sum(d.size() for d in self.devices.values())


def _int_option(options: Mapping[str, object], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: must be a positive integer, got {value!r}")
    return value


def _bool_option(options: Mapping[str, object], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false, got {value!r}")
    return value


class SparkplugReader(DeviceFormat):
    """The options and the metric-value reader of `SparkplugFormat`: no node state; see the
    module docstring."""

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        opts = self.options
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown sparkplug option; known: {', '.join(OPTIONS)}")
        group = opts.get("group")
        if group is not None and (
            not isinstance(group, str) or not group or any(c in group for c in "/+#")
        ):
            raise ValueError(f"group: must be a Sparkplug group_id (no / + #), got {group!r}")
        self.group: str | None = group
        if group is not None:  # subscribe to that group only
            self.default_topics = (f"spBv1.0/{group}/#",)
        self.rebirth = _bool_option(opts, "rebirth", False)
        self.site_from_group = _bool_option(opts, "site_from_group", False)
        interval = opts.get("rebirth_interval", 5.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ValueError(f"rebirth_interval: must be seconds >= 0, got {interval!r}")
        self.rebirth_interval = float(interval)
        self.max_metrics = _int_option(opts, "max_metrics", 1000)
        self.max_aliases = _int_option(opts, "max_aliases", 10_000)

    def _metric(  # noqa: PLR0917 - positional on purpose: the hot path
        self, m: Metric, learned: Learned, device: str, site: str, ts0: float, now: float
    ) -> Reading | None:
        which = m.WhichOneof("value")
        if which is None or m.is_null:
            self.skip(SKIP_NULL)
            return None
        datatype = learned.datatype
        value: float
        if which in INT_FIELDS:
            raw = m.int_value if which == "int_value" else m.long_value
            bits = SIGNED_BITS.get(datatype)
            if datatype == BOOLEAN:  # some encoders put booleans in int_value
                raw = 1 if raw else 0
            elif bits is not None:
                raw &= (1 << bits) - 1
                if raw >> (bits - 1):
                    raw -= 1 << bits
            elif datatype not in UNSIGNED:
                self._skip_type(datatype)
                return None
            value = float(raw)
        elif which in FLOAT_FIELDS:
            if datatype == FLOAT:
                # float32 on the wire: 7 significant digits, so 21.3 stays 21.3
                value = float(f"{m.float_value:.7g}") if which == "float_value" else m.double_value
            elif datatype == DOUBLE:
                value = m.double_value if which == "double_value" else m.float_value
            else:
                self._skip_type(datatype)
                return None
            if not math.isfinite(value):
                self.skip(SKIP_NON_FINITE)
                return None
        elif which == "boolean_value" and datatype == BOOLEAN:
            value = 1.0 if m.boolean_value else 0.0
        else:
            self._skip_type(datatype)
            return None
        if m.HasField("properties") and not _good(m.properties):
            self.skip(SKIP_QUALITY)
            return None
        ts = m.timestamp / 1000.0 if m.HasField("timestamp") else ts0
        if ts - now > self.max_clock_skew:
            self.skip(SKIP_CLOCK)
            return None
        return self.reading(device, learned.kind, value, ts, learned.unit, learned.labels, site)

    def _sent(self, message: Message, now: float) -> float:
        """The payload's timestamp (ms), else `now`; `now` too (counted) when it runs ahead."""
        if not message.HasField("timestamp"):
            return now
        ts = message.timestamp / 1000.0
        if ts - now > self.max_clock_skew:
            self.skip(SKIP_CLOCK)
            return now
        return ts

    def _skip_type(self, datatype: int) -> None:
        if datatype in TEXTS:
            self.skip(SKIP_TEXT)
        elif datatype in SIGNED_BITS or datatype in UNSIGNED or FLOAT <= datatype <= BOOLEAN:
            self.skip(SKIP_DATATYPE)
        else:
            self.skip(SKIP_UNSUPPORTED)


def _good(properties: PropertySet) -> bool:
    """False when a "Quality" property says the value is not good (Tahu sends 500, stale)."""
    for key, value in zip(properties.keys, properties.values, strict=False):
        if key == "Quality":
            which = value.WhichOneof("value")
            if which == "int_value":
                return value.int_value == QUALITY_GOOD
            if which == "long_value":
                return value.long_value == QUALITY_GOOD
    return True


def unit_of(m: Metric) -> str | None:
    """The `engUnit` property of a birth metric (Ignition's and Tahu's spelling), if any."""
    if not m.HasField("properties"):
        return None
    props = m.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if isinstance(key, str) and key.lower() in _UNIT_KEYS:
            unit = value.string_value if value.WhichOneof("value") == "string_value" else None
            if isinstance(unit, str):  # not bytes: upb's answer to a string of bad UTF-8
                return unit.strip()[:32] or None
    return None


def bdseq_of(message: Message) -> int | None:
    """The `bdSeq` metric of an NBIRTH or NDEATH, if it has one."""
    for m in message.metrics:
        if m.name == "bdSeq":
            which = m.WhichOneof("value")
            if which == "long_value":
                return m.long_value
            if which == "int_value":
                return m.int_value
    return None


def rebirth_request(now: float) -> bytes:
    """The NCMD payload that asks an edge node for its births again."""
    message = Payload(timestamp=int(now * 1000))
    message.metrics.add(name=REBIRTH_METRIC, datatype=BOOLEAN, boolean_value=True)
    data: bytes = message.SerializeToString()
    return data
