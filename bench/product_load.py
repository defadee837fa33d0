"""The product benchmark's load: a QoS 1 backlog of readings in sensord's default topics.

Two shapes, over `sensors` sensors, reading i going to sensor i mod sensors:
- `calm`: 20.00..26.99 °C, never near the rule's threshold: no transition at all;
- `storm`: each sensor cycles 90, 90, 90, 60, 60, 60 (rule `above: 80, clear_below: 75`),
  starting at its own offset (sensor mod 6) in the cycle, so that a fire (60 -> 90, or a
  first reading of 90) or a resolve (90 -> 60) is about one reading in three: 35 % with
  10 readings per sensor. `expected()` replays the rule on the load to give the exact
  count, which the benchmark compares with sensord's own `sensord_alerts_total`.

Topics follow sensord's default `topic_template` (`sensors/{site}/{device}/{kind}`);
payloads are `{"value": 90.0, "ts": <epoch s>}` with a timestamp that grows with i, so the
duplicate guard passes every reading, and is recent, so no rule takes it for stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from bench.broker import MAX_PACKET_ID
from bench.load import RawPublisher, publish_packet

Shape = Literal["calm", "storm"]
SHAPES: tuple[Shape, ...] = ("calm", "storm")

TOPIC_FILTER = "sensors/#"
ABOVE = 80.0
CLEAR_BELOW = 75.0
RULES_YAML = (
    "rules:\n"
    "  - name: bench-hot\n"
    "    match: {kind: temperature}\n"
    f"    above: {ABOVE:g}\n"
    f"    clear_below: {CLEAR_BELOW:g}\n"
    "    severity: critical\n"
)
TS_STEP = 0.0001
STORM_CYCLE = (90.0, 90.0, 90.0, 60.0, 60.0, 60.0)


def topic(sensor: int) -> str:
    return f"sensors/site-{sensor % 10}/dev-{sensor}/temperature"


def value(shape: Shape, i: int, sensors: int) -> float:
    if shape == "calm":
        return 20 + (i * 37 % 700) / 100
    sensor, k = i % sensors, i // sensors
    return STORM_CYCLE[(sensor + k) % len(STORM_CYCLE)]


@dataclass(frozen=True, slots=True)
class Expected:
    transitions: int  # fires + resolves
    firing_at_end: int  # sensors whose alert is still firing after the last reading


def expected(shape: Shape, readings: int, sensors: int) -> Expected:
    """Replay `above` / `clear_below` hysteresis over the load, sensor by sensor."""
    firing = [False] * min(sensors, readings)
    transitions = 0
    for i in range(readings):
        s = i % sensors
        v = value(shape, i, sensors)
        if not firing[s] and v > ABOVE:
            firing[s] = True
            transitions += 1
        elif firing[s] and v < CLEAR_BELOW:
            firing[s] = False
            transitions += 1
    return Expected(transitions, sum(firing))


def build_packets(shape: Shape, readings: int, sensors: int) -> list[bytes]:
    # epoch seconds, 0.1 ms apart, the last one now: every sensor's timestamps increase,
    # and the backlog is drained long before its oldest reading is `stale_after` (5 min,
    # the rules' default) old: 100,000 readings span 10 s
    base = time.time() - readings * TS_STEP
    packets = []
    for i in range(readings):
        ts = base + i * TS_STEP
        body = f'{{"value": {value(shape, i, sensors):.2f}, "ts": {ts:.4f}}}'.encode()
        packets.append(publish_packet(topic(i % sensors), body, 1, i % MAX_PACKET_ID + 1))
    return packets


@dataclass(frozen=True, slots=True)
class Published:
    readings: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def publish_backlog(
    port: int, *, shape: Shape, readings: int, sensors: int, client_id: str, window: int = 1000
) -> Published:
    """Publish the whole backlog at QoS 1 (every PUBACK awaited) with the raw writer of
    bench.load; in this process, since nothing else runs while the backlog is loaded."""
    packets = build_packets(shape, readings, sensors)
    pub = RawPublisher(port, client_id)
    try:
        start = time.perf_counter()
        pub.publish_qos1(packets, window)
        seconds = time.perf_counter() - start
    finally:
        pub.close()
    return Published(len(packets), seconds)
