"""bench.formats' load: a backlog per payload format, from simulated devices of that format.

For a format of `simulators.devices` (or the native `sensord`, built here), `build(fmt, …)`
makes `devices` devices (`cls(device, site)`) and returns:
- `births`: every device's `birth()` (discovery configs, Sparkplug NBIRTH/DBIRTH,
  availability "online", …), in device order;
- `states`: reports round-robin over the devices (`state(values, ts)`), as many as needed
  for at least `messages` MQTT messages (a report is 1..n messages: one Zigbee2MQTT
  object, one ESPHome topic per sensor, Tasmota's STATE and SENSOR, …).

Values are calm (no rule fires: the temperature stays at 20..27 °C, the rule is
`above: 80`) and vary from report to report; a report's time `ts` starts after the births
and grows by 20 ms per device and report (20 reports of 1000 devices span 0.4 s, a little
ahead of the clock when built, well within `max_clock_skew`): every device's times grow,
and none is stale by the time it is read.

Every message is published at QoS 1 and **not retained**, whatever its firmware does:
Mosquitto does not queue a QoS 0 message for an offline session (`queue_qos0_messages
false`), and a retained message reaches a subscribed session's queue as an ordinary one,
but is sent once more on each SUBSCRIBE, so sensord would count more than the backlog.

`replay()` gives the expected count: each message through a fresh instance of sensord's own
decoder for the source (in this process, no MQTT), then the bridge's duplicate guard as
docs/sources.md states it (same sensor and time again: duplicate; older: late).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.client import topic_matches_sub

from bench.broker import MAX_PACKET_ID
from bench.load import publish_packet
from sensord.errors import PayloadError
from sensord.ingest.formats._fields import TopicFormat
from sensord.ingest.sources import Source
from simulators import devices

Msg = tuple[str, bytes, int, bool]
NATIVE = "sensord"
SITE = "bench"  # the source's site (formats whose topics and payloads name none)
GAP = 0.02  # seconds between two reports of a device (Shelly's `ts` has 10 ms steps)

# the values a report carries: shared kind -> (low, span); a device honours the kinds its
# firmware has (an ESPHome node: temperature, humidity; a Zigbee2MQTT WSDCGQ11LM: all six)
KINDS: dict[str, tuple[float, float]] = {
    "temperature": (20.0, 7.0),
    "humidity": (40.0, 20.0),
    "pressure": (1000.0, 20.0),
    "battery": (80.0, 20.0),
    "voltage": (2900.0, 200.0),  # mV, as Zigbee2MQTT reports a battery's voltage
    "linkquality": (50.0, 150.0),
}
INTEGRAL = frozenset({"battery", "voltage", "linkquality"})


def values(report: int, device: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, (kind, (low, span)) in enumerate(KINDS.items()):
        step = (report * 37 + device * 11 + n * 53) % 700 / 700
        v = low + span * step
        out[kind] = float(round(v)) if kind in INTEGRAL else round(v, 2)
    return out


class NativeDevice:
    """sensord's own payloads: one `{"value": …, "ts": …}` per kind, on sensord's default
    `topic_template` (`sensors/{site}/{device}/{kind}`); no birth, no death."""

    def __init__(self, device: str, site: str) -> None:
        self.base = f"sensors/{site}/{device}/"

    def birth(self) -> list[Msg]:
        return []

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        return [
            (self.base + kind, f'{{"value": {v}, "ts": {ts:.4f}}}'.encode(), 1, False)
            for kind, v in values.items()
        ]

    def death(self) -> list[Msg]:
        return []


def names() -> tuple[str, ...]:
    """The native format first, then every simulated device format."""
    return (NATIVE, *devices.names())


def _factory(fmt: str) -> Callable[[str, str], Any]:
    return NativeDevice if fmt == NATIVE else devices.get(fmt)


@dataclass(slots=True)
class Backlog:
    fmt: str
    devices: int
    births: list[Msg] = field(default_factory=list)
    states: list[Msg] = field(default_factory=list)
    reports: int = 0
    values_in_reports: int = 0  # numeric values handed to state(): the "fields"

    @property
    def messages(self) -> list[Msg]:
        return [*self.births, *self.states]


def build(fmt: str, n_devices: int, messages: int) -> Backlog:
    """Births of `n_devices` devices, then reports until there are >= `messages` states."""
    make = _factory(fmt)
    fleet = [make(f"bench-{d}", f"plant-{d % 10}") for d in range(n_devices)]
    out = Backlog(fmt, n_devices)
    for dev in fleet:
        out.births += dev.birth()
    # a report's time: after every birth (a Sparkplug birth is stamped with the clock),
    # each device's reports GAP apart, whatever the number of devices
    step = GAP / n_devices
    start = time.time() + 0.001
    report = 0
    while len(out.states) < messages:
        d = report % n_devices
        vals = values(report // n_devices, d)
        out.states += fleet[d].state(vals, start + report * step)
        out.values_in_reports += len(vals)
        report += 1
    out.reports = report
    return out


def packets(msgs: Iterable[Msg]) -> list[bytes]:
    """QoS 1, not retained (see the module docstring); packet ids cycle 1..65535."""
    return [
        publish_packet(topic, payload, 1, i % MAX_PACKET_ID + 1)
        for i, (topic, payload, _qos, _retain) in enumerate(msgs)
    ]


class _Link:
    """A SourceLink that records what the format subscribes to: the replay has no broker."""

    def __init__(self) -> None:
        self.learned: dict[str, None] = {}  # ordered, and a set lookup

    def subscribe(self, topic_filter: str) -> None:
        self.learned[topic_filter] = None

    def unsubscribe(self, topic_filter: str) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Expected:
    births_readings: int
    states_readings: int
    refused: int
    late: int
    duplicates: int
    filters: tuple[str, ...]  # what sensord is subscribed to: the source's and learned ones
    messages: int  # the backlog's messages on those filters: what reaches sensord

    @property
    def readings(self) -> int:
        return self.births_readings + self.states_readings


def _subscribed(topic: str, filters: Sequence[str], learned: Iterable[str]) -> bool:
    """Whether a filter matches; learned ones are mostly exact topics (a set lookup: a
    discovery source learns thousands)."""
    if topic in learned:
        return True
    return any(topic_matches_sub(f, topic) for f in filters) or any(
        topic_matches_sub(f, topic) for f in learned if "+" in f or "#" in f
    )


def replay(source: Source, backlog: Backlog) -> Expected:
    """What sensord should count for the backlog: its decoder, then the duplicate guard."""
    fmt = source.format
    link = _Link()
    bind = getattr(fmt, "bind", None)
    if callable(bind):
        bind(link)
    labelled = not isinstance(fmt, TopicFormat)
    last: dict[tuple[str, str, str], tuple[float, float]] = {}
    counts = {"births": 0, "states": 0, "refused": 0, "late": 0, "duplicates": 0}
    now = time.time()
    for part, msgs in (("births", backlog.births), ("states", backlog.states)):
        for topic, payload, _qos, _retain in msgs:
            if not _subscribed(topic, source.filters, link.learned):
                continue  # sensord is not subscribed to it (Tasmota's INFO1)
            try:
                readings = fmt.parse(topic, payload, now)
            except PayloadError:
                counts["refused"] += 1
                continue
            for r in readings:
                if r.ts == now:  # stamped with the receive time: no identity to compare
                    counts[part] += 1
                    continue
                tail = "\x1f".join((r.kind, *r.labels.values())) if labelled else r.kind
                key = (topic, r.device, tail)
                seen = last.get(key)
                if seen is not None and r.ts <= seen[0]:
                    dup = r.ts == seen[0] and seen[1] == r.value
                    counts["duplicates" if dup else "late"] += 1
                    continue
                last[key] = (r.ts, r.value)
                counts[part] += 1
    filters = (*source.filters, *link.learned)
    # sensord's session holds the learned subscriptions too (its learn run made them)
    on_filters = sum(
        1 for topic, *_ in backlog.messages if _subscribed(topic, source.filters, link.learned)
    )
    return Expected(
        counts["births"],
        counts["states"],
        counts["refused"],
        counts["late"],
        counts["duplicates"],
        filters,
        on_filters,
    )
