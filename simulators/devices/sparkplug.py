"""A simulated Sparkplug B 3.0 edge node with one device, as Eclipse Tahu's Python edge node
publishes (https://github.com/eclipse/tahu/blob/master/python/examples/example.py):

- `birth()`: NBIRTH (seq 0, the session's `bdSeq` metric, `Node Control/Rebirth`), then
  DBIRTH of device `sensors` with one metric per kind (`Sensors/Temperature` …, an alias
  each, datatype Float or Boolean, an `engUnit` property), QoS 0, not retained;
- `state(values, ts)`: one DDATA with the metrics by alias (metric timestamps in ms), `seq`
  counting on per edge node (0..255); a kind not in the last DBIRTH makes the device
  re-birth first (DBIRTH), as Sparkplug requires;
- `death()`: DDEATH, then the NDEATH that the broker publishes as the node's will (the
  same `bdSeq` as the NBIRTH); the next `birth()` starts a new session (bdSeq + 1).

Topics `spBv1.0/<group_id>/…/<edge_node_id>[/sensors]`: group_id = the site, edge node =
the device name. Payloads are encoded with the gencode sensord decodes with.
"""

from __future__ import annotations

import time
from typing import Any

from sensord.ingest.formats import _sparkplug_b_pb2
from simulators.devices import Msg, register

Payload: Any = _sparkplug_b_pb2.Payload

INT64, FLOAT, BOOLEAN = 4, 9, 11  # Sparkplug B datatypes (sparkplug_b.proto)
DEVICE_ID = "sensors"
_BINARY = frozenset({"contact", "occupancy", "motion", "water_leak", "smoke", "tamper"})
_UNITS = {
    "temperature": "°C",
    "humidity": "%",
    "pressure": "hPa",
    "battery": "%",
    "voltage": "V",
    "current": "A",
    "power": "W",
    "energy": "kWh",
    "illuminance": "lx",
    "co2": "ppm",
    "pm25": "µg/m³",
}
_DEFAULT_KINDS = ("temperature", "humidity")


def metric_name(kind: str) -> str:
    """`temperature` -> `Sensors/Temperature`, `water_leak` -> `Sensors/WaterLeak`."""
    return "Sensors/" + "".join(part.title() for part in kind.split("_"))


@register("sparkplug")
class SparkplugEdgeNode:
    def __init__(self, device: str, site: str) -> None:
        self.group = site
        self.edge = device
        self.bdseq = 0
        self.seq = 0
        self.kinds: list[str] = list(_DEFAULT_KINDS)
        self.aliases: dict[str, int] = {}

    def _topic(self, mtype: str, device: bool) -> str:
        base = f"spBv1.0/{self.group}/{mtype}/{self.edge}"
        return f"{base}/{DEVICE_ID}" if device else base

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        return seq

    def _payload(self, ts_ms: int) -> Any:
        return Payload(timestamp=ts_ms, seq=self._next_seq())

    def birth(self) -> list[Msg]:
        ts_ms = int(time.time() * 1000)
        self.seq = 0
        nbirth = self._payload(ts_ms)
        nbirth.metrics.add(name="bdSeq", timestamp=ts_ms, datatype=INT64, long_value=self.bdseq)
        nbirth.metrics.add(
            name="Node Control/Rebirth", timestamp=ts_ms, datatype=BOOLEAN, boolean_value=False
        )
        msgs: list[Msg] = [(self._topic("NBIRTH", False), nbirth.SerializeToString(), 0, False)]
        msgs.append(self._dbirth(ts_ms, {}))
        return msgs

    def _dbirth(self, ts_ms: int, values: dict[str, float]) -> Msg:
        payload = self._payload(ts_ms)
        self.aliases = {}
        for alias, kind in enumerate(self.kinds, start=1):
            self.aliases[kind] = alias
            binary = kind in _BINARY
            metric = payload.metrics.add(
                name=metric_name(kind),
                alias=alias,
                timestamp=ts_ms,
                datatype=BOOLEAN if binary else FLOAT,
            )
            if kind in values:
                if binary:
                    metric.boolean_value = bool(values[kind])
                else:
                    metric.float_value = values[kind]
            else:
                metric.is_null = True  # known metric, no value yet (Tahu's addNullMetric)
            unit = _UNITS.get(kind)
            if unit is not None:
                metric.properties.keys.append("engUnit")
                metric.properties.values.add(type=12, string_value=unit)  # String
        return (self._topic("DBIRTH", True), payload.SerializeToString(), 0, False)

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        ts_ms = int(ts * 1000)
        msgs: list[Msg] = []
        new = [kind for kind in values if kind not in self.aliases]
        if new:
            self.kinds.extend(new)
            msgs.append(self._dbirth(ts_ms, {}))
        payload = self._payload(ts_ms)
        for kind, value in values.items():
            if kind in _BINARY:
                payload.metrics.add(
                    alias=self.aliases[kind],
                    timestamp=ts_ms,
                    datatype=BOOLEAN,
                    boolean_value=bool(value),
                )
            else:
                payload.metrics.add(
                    alias=self.aliases[kind], timestamp=ts_ms, datatype=FLOAT, float_value=value
                )
        msgs.append((self._topic("DDATA", True), payload.SerializeToString(), 0, False))
        return msgs

    def death(self) -> list[Msg]:
        ts_ms = int(time.time() * 1000)
        ddeath = self._payload(ts_ms)
        ndeath = Payload()  # the will: composed at connect, no timestamp nor seq
        ndeath.metrics.add(name="bdSeq", datatype=INT64, long_value=self.bdseq)
        self.bdseq = (self.bdseq + 1) & 0xFF
        return [
            (self._topic("DDEATH", True), ddeath.SerializeToString(), 0, False),
            (self._topic("NDEATH", False), ndeath.SerializeToString(), 0, False),
        ]
