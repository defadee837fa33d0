"""Format "sparkplug": Eclipse Sparkplug B 3.0 edge nodes and devices (docs/formats/sparkplug.md).

Topics `spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]`, payloads the
protobuf `Payload` of the specification, decoded by Google's `protobuf` runtime with the
gencode `_sparkplug_b_pb2` (generated from `sparkplug_b.proto` by
scripts/gen-sparkplug-pb2.sh, nothing parsed at run time).

A small state machine per edge node, as a Sparkplug host application keeps:

- NBIRTH learns the node's metrics (name, alias, datatype, `engUnit` property) and its
  `bdSeq`; DBIRTH learns a device's. Both are readings too, and `online` 1.
- NDATA/DDATA carry metrics by alias (or by name); values are read by the birth's datatype.
- `seq` (0..255, wrapping, per edge node) gaps are counted (`seq_gap`); data before a birth
  is counted (`no_birth`); both, with option `rebirth = true`, are answered with an NCMD
  `Node Control/Rebirth`, at most once per `rebirth_interval` per node.
- NDEATH whose `bdSeq` matches the NBIRTH's -> `online` 0 for the node and its devices; a
  stale NDEATH (another bdSeq: the will of an older session) is ignored (`stale_death`).
  DDEATH -> `online` 0 for that device.

Identity: device = `<edge_node_id>` for node metrics, `<edge_node_id>/<device_id>` for
device metrics; label `sensor` = the metric's full name (always, so that a sensor's identity
does not depend on its siblings); label `group` = group_id unless `site_from_group = true`
makes group_id the site. Kind = the shared kind of the name's last path element.

Untrusted input: births are bounded (`max_metrics` per birth, `max_aliases` per edge node,
`max_sensors` learned in all), checked in full before they replace anything: a birth over a
bound or with a duplicate alias is refused (PayloadError) and the previous birth is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from google.protobuf.message import (  # type: ignore[import-untyped]  # protobuf ships no hints
    DecodeError,
)

from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import (
    NO_LABELS,
    SKIP_CAP,
    SKIP_CLOCK,
    SKIP_NON_FINITE,
    SKIP_NULL,
    SKIP_TEXT,
    DeviceFormat,
)
from sensord.ingest.formats._sparkplug_b_pb2 import Payload as _Payload
from sensord.ingest.reasons import TOO_LARGE, TOPIC

NAMESPACE: Final = "spBv1.0"

# Sparkplug B 3.0 datatypes (the spec's "Datatypes" section; sparkplug_b.proto)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}  # two's complement in a uint field
_UNSIGNED = frozenset({UINT8, UINT16, UINT32, UINT64})
_TEXTS = frozenset({STRING, TEXT, UUID})
_INT_FIELDS = frozenset({"int_value", "long_value"})  # the Metric.value oneof's members
_FLOAT_FIELDS = frozenset({"float_value", "double_value"})
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
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/")
_UNIT_KEYS = frozenset({"engunit", "engunits", "unit", "units"})
_TRAILING_INDEX = re.compile(r"^(.*?)[\s_\-]*\d+$")  # "Temp 1" -> "Temp"
_NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH"})
_DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH"})
_COMMANDS = frozenset({"NCMD", "DCMD"})

OPTIONS: Final = (
    "group",
    "max_aliases",
    "max_metrics",
    "rebirth",
    "rebirth_interval",
    "site_from_group",
)


class _PropertyValue(Protocol):
    type: int
    int_value: int
    long_value: int
    string_value: str

    def WhichOneof(self, group: str) -> str | None: ...  # noqa: N802 - protobuf's API


class _PropertySet(Protocol):
    keys: list[str]
    values: list[_PropertyValue]


class _Metric(Protocol):
    """The fields of `Payload.Metric` read here (the gencode itself is untyped)."""

    name: str
    alias: int
    timestamp: int
    datatype: int
    is_null: bool
    properties: _PropertySet
    int_value: int
    long_value: int
    float_value: float
    double_value: float
    boolean_value: bool

    def HasField(self, field: str) -> bool: ...  # noqa: N802 - protobuf's API

    def WhichOneof(self, group: str) -> str | None: ...  # noqa: N802


class _Message(Protocol):
    timestamp: int
    seq: int
    metrics: list[_Metric]

    def HasField(self, field: str) -> bool: ...  # noqa: N802


Payload: Any = _Payload  # the generated class; typed through the protocols above


def decode(payload: bytes | bytearray) -> _Message | None:
    """The Payload message, or None when the bytes are not one."""
    try:
        message: _Message = Payload.FromString(payload)  # bytearray too, no copy
    except DecodeError:
        return None
    return message


class _Learned:
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


class _Device:
    """The node itself (device_id "") or one of its devices, as its last birth defined it."""

    __slots__ = ("by_alias", "by_name", "capped", "device", "device_id", "online")

    def __init__(self, device_id: str, device: str) -> None:
        self.device_id = device_id
        self.device = device  # the Reading's device
        self.by_alias: dict[int, _Learned] = {}
        self.by_name: dict[str, _Learned] = {}
        self.capped = False  # metrics of its birth were left out at the sensor cap
        self.online = True

    def size(self) -> int:
        return 1 + len(self.by_name)  # its `online` sensor and its metrics


class _Node:
    __slots__ = ("bdseq", "devices", "group", "labels", "node", "seq", "site")

    def __init__(self, group: str, node: _Device, labels: dict[str, str], site: str) -> None:
        self.group = group
        self.node = node
        self.labels = labels  # of its `online` readings
        self.site = site
        self.devices: dict[str, _Device] = {}
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


@register("sparkplug")
class SparkplugFormat(DeviceFormat):
    """Sparkplug B 3.0 births, data and deaths; see the module docstring."""

    name = "sparkplug"
    default_topics: tuple[str, ...] = ("spBv1.0/#",)

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
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._learned = 0  # sensors learned over all nodes (each device's online + metrics)
        self._asked: dict[tuple[str, str], float] = {}  # node -> last rebirth request
        self.rebirths_requested = 0

    # ---- the hot path

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        parts = topic.split("/")
        if parts[0] != NAMESPACE or len(parts) < 3:
            raise self.error(f"topic {topic!r} is not under {NAMESPACE}/", TOPIC)
        group, mtype = parts[1], parts[2]
        if group == "STATE" or mtype in _COMMANDS:
            return []  # host application state, commands (our own rebirth requests too)
        if self.group is not None and group != self.group:
            return []
        n = len(parts)
        if not (
            (n == 4 and mtype in _NODE_TYPES) or (n == 5 and mtype in _DEVICE_TYPES)
        ) or not all(parts[1:]):
            raise self.error(
                f"topic {topic!r} is not spBv1.0/<group>/<type>/<edge_node>[/<device>]", TOPIC
            )
        self.check_size(payload)
        message = decode(payload)
        if message is None:
            raise self.error("payload is not a Sparkplug B protobuf Payload")
        edge = parts[3]
        if mtype == "NDATA":
            node = self._alive(group, edge, message, now)
            return [] if node is None else self._data(node, node.node, message, now)
        if mtype == "DDATA":
            node = self._alive(group, edge, message, now)
            if node is None:
                return []
            dev = node.devices.get(parts[4])
            if dev is None or not dev.online:
                self._no_birth(group, edge, message, now)
                return []
            return self._data(node, dev, message, now)
        if mtype == "NBIRTH":
            return self._nbirth(group, edge, message, now)
        if mtype == "DBIRTH":
            return self._dbirth(group, edge, parts[4], message, now)
        if mtype == "NDEATH":
            return self._ndeath(group, edge, message, now)
        return self._ddeath(group, edge, parts[4], message, now)

    def _data(self, node: _Node, dev: _Device, message: _Message, now: float) -> list[Reading]:
        ts0 = self._sent(message, now)
        by_alias, by_name = dev.by_alias, dev.by_name
        site = node.site
        device = dev.device
        out: list[Reading] = []
        for m in message.metrics:
            learned = by_alias.get(m.alias) if m.HasField("alias") else by_name.get(m.name)
            if learned is None:
                if dev.capped:
                    self.skip(SKIP_CAP)
                else:
                    self.skip(SKIP_ALIAS)
                    self._ask_rebirth(node.group, node.node.device_id, now)
                continue
            if learned.control:
                continue
            reading = self._metric(m, learned, device, site, ts0, now)
            if reading is not None:
                out.append(reading)
        return out

    def _metric(  # noqa: PLR0917 - positional on purpose: the hot path
        self, m: _Metric, learned: _Learned, device: str, site: str, ts0: float, now: float
    ) -> Reading | None:
        which = m.WhichOneof("value")
        if which is None or m.is_null:
            self.skip(SKIP_NULL)
            return None
        datatype = learned.datatype
        value: float
        if which in _INT_FIELDS:
            raw = m.int_value if which == "int_value" else m.long_value
            bits = _SIGNED_BITS.get(datatype)
            if datatype == BOOLEAN:  # some encoders put booleans in int_value
                raw = 1 if raw else 0
            elif bits is not None:
                raw &= (1 << bits) - 1
                if raw >> (bits - 1):
                    raw -= 1 << bits
            elif datatype not in _UNSIGNED:
                self._skip_type(datatype)
                return None
            value = float(raw)
        elif which in _FLOAT_FIELDS:
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

    def _sent(self, message: _Message, now: float) -> float:
        """The payload's timestamp (ms), else `now`; `now` too (counted) when it runs ahead."""
        if not message.HasField("timestamp"):
            return now
        ts = message.timestamp / 1000.0
        if ts - now > self.max_clock_skew:
            self.skip(SKIP_CLOCK)
            return now
        return ts

    def _skip_type(self, datatype: int) -> None:
        if datatype in _TEXTS:
            self.skip(SKIP_TEXT)
        elif datatype in _SIGNED_BITS or datatype in _UNSIGNED or FLOAT <= datatype <= BOOLEAN:
            self.skip(SKIP_DATATYPE)
        else:
            self.skip(SKIP_UNSUPPORTED)

    # ---- sequence, births, deaths

    def _alive(self, group: str, edge: str, message: _Message, now: float) -> _Node | None:
        """The born, alive node of a message that counts in its seq; None (counted) if none."""
        node = self._nodes.get((group, edge))
        if node is None or not node.node.online:
            self._no_birth(group, edge, message, now)
            return None
        if message.HasField("seq"):
            seq = message.seq
            if node.seq is not None and seq != (node.seq + 1) & 0xFF:
                self.skip(SKIP_SEQ_GAP)
                self._ask_rebirth(group, edge, now)
            node.seq = seq & 0xFF
        return node

    def _no_birth(self, group: str, edge: str, message: _Message, now: float) -> None:
        self.skip(SKIP_NO_BIRTH, max(1, len(message.metrics)))
        self._ask_rebirth(group, edge, now)

    def _ask_rebirth(self, group: str, edge: str, now: float) -> None:
        """NCMD `Node Control/Rebirth` = true, at most once per interval per node."""
        if not self.rebirth or self.link is None:
            return
        key = (group, edge)
        last = self._asked.get(key)
        if last is not None and now - last < self.rebirth_interval:
            return
        if last is None and len(self._asked) >= self.max_sensors:
            del self._asked[next(iter(self._asked))]  # bounded: the oldest request goes
        self._asked.pop(key, None)
        self._asked[key] = now
        self.rebirths_requested += 1
        self.link.publish(f"{NAMESPACE}/{group}/NCMD/{edge}", rebirth_request(now), 0, False)

    def _learn(
        self, node_labels: dict[str, str], dev: _Device, message: _Message, room: int, what: str
    ) -> int:
        """Fill `dev` from a birth's metrics; returns how many were learned. Raises
        PayloadError (and changes nothing outside `dev`) for a birth over a bound."""
        metrics = message.metrics
        if len(metrics) > self.max_metrics:
            raise self.error(
                f"{what} has {len(metrics)} metrics > max_metrics {self.max_metrics}; "
                "the previous birth is kept",
                TOO_LARGE,
            )
        by_alias, by_name = dev.by_alias, dev.by_name
        for m in metrics:
            name = m.name
            if not name or not isinstance(name, str):  # upb gives bytes for bad UTF-8
                self.skip(SKIP_NO_NAME)
                continue
            if m.HasField("alias"):
                if m.alias in by_alias:
                    raise self.error(
                        f"{what}: alias {m.alias} is bound twice; the previous birth is kept"
                    )
            elif name in by_name:
                continue  # a repeated name without alias (historical values): known
            if len(by_name) >= room:
                dev.capped = True
                self.skip(SKIP_CAP)
                continue
            control = name.startswith(_CONTROL_PREFIXES) or name == "bdSeq"
            learned = _Learned(
                self._metric_kind(name),
                _unit(m),
                {**node_labels, "sensor": name},
                m.datatype,
                control,
            )
            by_name[name] = learned
            if m.HasField("alias"):
                by_alias[m.alias] = learned
        return len(by_name)

    def _nbirth(self, group: str, edge: str, message: _Message, now: float) -> list[Reading]:
        key = (group, edge)
        old = self._nodes.get(key)
        old_size = old.size() if old is not None else 0
        labels = NO_LABELS if self.site_from_group else {"group": group}
        site = group if self.site_from_group else self.site
        if old is None and self.over_cap(self._learned):
            return []  # no room for one more node
        dev = _Device("", edge)
        room = self.max_sensors - (self._learned - old_size) - 1
        self._learn(labels, dev, message, room, f"NBIRTH of {group}/{edge}")
        if len(dev.by_alias) > self.max_aliases:
            raise self.error(
                f"NBIRTH of {group}/{edge} has {len(dev.by_alias)} aliases > max_aliases "
                f"{self.max_aliases}; the previous birth is kept",
                TOO_LARGE,
            )
        node = _Node(group, dev, labels, site)
        node.bdseq = _bdseq(message)
        node.seq = message.seq & 0xFF if message.HasField("seq") else None
        # a new NBIRTH ends the devices' births: they follow it with DBIRTHs
        self._nodes[key] = node
        self._learned += node.size() - old_size
        self._asked.pop(key, None)
        return self._birth_readings(node, dev, message, now)

    def _dbirth(
        self, group: str, edge: str, device_id: str, message: _Message, now: float
    ) -> list[Reading]:
        node = self._alive(group, edge, message, now)
        if node is None:
            return []
        old = node.devices.get(device_id)
        old_size = old.size() if old is not None else 0
        if old is None and self.over_cap(self._learned):
            return []
        dev = _Device(device_id, f"{edge}/{device_id}")
        room = self.max_sensors - (self._learned - old_size) - 1
        what = f"DBIRTH of {group}/{edge}/{device_id}"
        self._learn(node.labels, dev, message, room, what)
        aliases = node.aliases() - (len(old.by_alias) if old is not None else 0)
        if aliases + len(dev.by_alias) > self.max_aliases:
            raise self.error(
                f"{what}: {aliases + len(dev.by_alias)} aliases on the edge node > "
                f"max_aliases {self.max_aliases}; the previous birth is kept",
                TOO_LARGE,
            )
        node.devices[device_id] = dev
        self._learned += dev.size() - old_size
        return self._birth_readings(node, dev, message, now)

    def _birth_readings(
        self, node: _Node, dev: _Device, message: _Message, now: float
    ) -> list[Reading]:
        ts0 = self._sent(message, now)
        out = [Reading.trusted(node.site, dev.device, kinds.ONLINE, 1.0, ts0, node.labels, None)]
        by_alias, by_name = dev.by_alias, dev.by_name
        for m in message.metrics:
            learned = by_alias.get(m.alias) if m.HasField("alias") else by_name.get(m.name)
            if learned is None or learned.control:
                continue  # unnamed or over the cap: counted by _learn
            reading = self._metric(m, learned, dev.device, node.site, ts0, now)
            if reading is not None:
                out.append(reading)
        return out

    def _ndeath(self, group: str, edge: str, message: _Message, now: float) -> list[Reading]:
        node = self._nodes.get((group, edge))
        if node is None or not node.node.online:
            self.skip(SKIP_NO_BIRTH)  # nothing to mark, and its bdSeq cannot be checked
            return []
        bdseq = _bdseq(message)
        if bdseq is not None and node.bdseq is not None and bdseq != node.bdseq:
            self.skip(SKIP_STALE_DEATH)  # the will of an older session
            return []
        ts = self._sent(message, now)
        out = []
        for dev in (node.node, *node.devices.values()):
            if dev.online:
                dev.online = False
                out.append(
                    Reading.trusted(node.site, dev.device, kinds.ONLINE, 0.0, ts, node.labels, None)
                )
        return out

    def _ddeath(
        self, group: str, edge: str, device_id: str, message: _Message, now: float
    ) -> list[Reading]:
        node = self._alive(group, edge, message, now)
        if node is None:
            return []
        dev = node.devices.get(device_id)
        if dev is None or not dev.online:
            self.skip(SKIP_NO_BIRTH)
            return []
        dev.online = False
        ts = self._sent(message, now)
        return [Reading.trusted(node.site, dev.device, kinds.ONLINE, 0.0, ts, node.labels, None)]

    def _metric_kind(self, name: str) -> str:
        """The shared kind of a metric name's last path element ("Sensors/Temperature");
        a trailing index ("Temp 1", "temperature_2") is dropped when that gives a known kind."""
        last = name.rsplit("/", 1)[-1]
        kind = self.kind(last)
        if kind not in kinds.KINDS and kind not in kinds.BINARY_KINDS:
            bare = _TRAILING_INDEX.match(last)
            if bare is not None and bare.group(1):
                base = self.kind(bare.group(1))
                if base in kinds.KINDS or base in kinds.BINARY_KINDS:
                    return base
        return kind or "value"

    # ---- for `sensord sources`

    def discovered(self) -> dict[str, object]:
        nodes: list[dict[str, object]] = []
        for (group, edge), node in self._nodes.items():
            nodes.append(
                {
                    "group": group,
                    "edge_node": edge,
                    "online": node.node.online,
                    "bdSeq": node.bdseq,
                    "metrics": len(node.node.by_name),
                    "devices": [
                        {"device": d.device_id, "online": d.online, "metrics": len(d.by_name)}
                        for d in node.devices.values()
                    ],
                }
            )
        return {
            "nodes": nodes,
            "sensors": self._learned,
            "rebirths_requested": self.rebirths_requested,
        }


def _good(properties: _PropertySet) -> bool:
    """False when a "Quality" property says the value is not good (Tahu sends 500, stale)."""
    for key, value in zip(properties.keys, properties.values, strict=False):
        if key == "Quality":
            which = value.WhichOneof("value")
            if which == "int_value":
                return value.int_value == QUALITY_GOOD
            if which == "long_value":
                return value.long_value == QUALITY_GOOD
    return True


def _unit(m: _Metric) -> str | None:
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


def _bdseq(message: _Message) -> int | None:
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
