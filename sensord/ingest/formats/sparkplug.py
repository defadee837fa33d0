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

This module holds the format itself: the topic dispatch, the per-node state machine (seq,
births, deaths, rebirth requests) and data messages. The datatypes, the typed protobuf
view, the node/device state model, the options and the reading of one metric's value are
in `_sparkplug_model` (the base class `SparkplugReader`).
"""

from __future__ import annotations

import re

from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import NO_LABELS, SKIP_CAP
from sensord.ingest.formats._sparkplug_model import (
    NAMESPACE,
    SKIP_ALIAS,
    SKIP_NO_BIRTH,
    SKIP_NO_NAME,
    SKIP_SEQ_GAP,
    SKIP_STALE_DEATH,
    Device,
    Learned,
    Message,
    Node,
    SparkplugReader,
    bdseq_of,
    decode,
    rebirth_request,
    unit_of,
)
from sensord.ingest.reasons import TOO_LARGE, TOPIC

_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/")
_TRAILING_INDEX = re.compile(r"^(.*?)[\s_\-]*\d+$")  # "Temp 1" -> "Temp"
_NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH"})
_DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH"})
_COMMANDS = frozenset({"NCMD", "DCMD"})


@register("sparkplug")
class SparkplugFormat(SparkplugReader):
    """Sparkplug B 3.0 births, data and deaths; see the module docstring."""

    name = "sparkplug"
    default_topics: tuple[str, ...] = ("spBv1.0/#",)

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        self._nodes: dict[tuple[str, str], Node] = {}
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

    def _data(self, node: Node, dev: Device, message: Message, now: float) -> list[Reading]:
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

    # ---- sequence, births, deaths

    def _alive(self, group: str, edge: str, message: Message, now: float) -> Node | None:
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

    def _no_birth(self, group: str, edge: str, message: Message, now: float) -> None:
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
        self, node_labels: dict[str, str], dev: Device, message: Message, room: int, what: str
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
            learned = Learned(
                self._metric_kind(name),
                unit_of(m),
                {**node_labels, "sensor": name},
                m.datatype,
                control,
            )
            by_name[name] = learned
            if m.HasField("alias"):
                by_alias[m.alias] = learned
        return len(by_name)

    def _nbirth(self, group: str, edge: str, message: Message, now: float) -> list[Reading]:
        key = (group, edge)
        old = self._nodes.get(key)
        old_size = old.size() if old is not None else 0
        labels = NO_LABELS if self.site_from_group else {"group": group}
        site = group if self.site_from_group else self.site
        if old is None and self.over_cap(self._learned):
            return []  # no room for one more node
        dev = Device("", edge)
        room = self.max_sensors - (self._learned - old_size) - 1
        self._learn(labels, dev, message, room, f"NBIRTH of {group}/{edge}")
        if len(dev.by_alias) > self.max_aliases:
            raise self.error(
                f"NBIRTH of {group}/{edge} has {len(dev.by_alias)} aliases > max_aliases "
                f"{self.max_aliases}; the previous birth is kept",
                TOO_LARGE,
            )
        node = Node(group, dev, labels, site)
        node.bdseq = bdseq_of(message)
        node.seq = message.seq & 0xFF if message.HasField("seq") else None
        # a new NBIRTH ends the devices' births: they follow it with DBIRTHs
        self._nodes[key] = node
        self._learned += node.size() - old_size
        self._asked.pop(key, None)
        return self._birth_readings(node, dev, message, now)

    def _dbirth(
        self, group: str, edge: str, device_id: str, message: Message, now: float
    ) -> list[Reading]:
        node = self._alive(group, edge, message, now)
        if node is None:
            return []
        old = node.devices.get(device_id)
        old_size = old.size() if old is not None else 0
        if old is None and self.over_cap(self._learned):
            return []
        dev = Device(device_id, f"{edge}/{device_id}")
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
        self, node: Node, dev: Device, message: Message, now: float
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

    def _ndeath(self, group: str, edge: str, message: Message, now: float) -> list[Reading]:
        node = self._nodes.get((group, edge))
        if node is None or not node.node.online:
            self.skip(SKIP_NO_BIRTH)  # nothing to mark, and its bdSeq cannot be checked
            return []
        bdseq = bdseq_of(message)
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
        self, group: str, edge: str, device_id: str, message: Message, now: float
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
