"""Rule engine benchmark, pure core: `python -m bench.rules [--readings N] [--sensors S]`.

JSON on stdout, progress on stderr. Per scenario: (rule, reading) evaluations per second
through `RuleEngine.evaluate`, the same readings through a bare reference loop measured in
the same run (a dict lookup and a comparison per (rule, reading)), their ratio, the cost
of a scheduler tick, and the bytes of state per (rule, sensor). Nothing here is asserted
as a wall-clock limit (CONVENTIONS.md, point 10).

Times are CPU time of this process (time.process_time): on a shared machine wall-clock
time counts other processes' work. Readings are built in chunks outside the clock (a
Reading per iteration would measure pydantic, not the engine) with increasing
timestamps, one simulated millisecond apart, so windows slide as they would live. Values
are mostly ordinary; a share (--excursions, 0.5 %) jumps past the thresholds, so alerts
do fire and resolve along the way.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sensord.events import Reading
from sensord.rules import Rule, RuleEngine

T0 = 1_764_331_200.0
STEP = 0.001  # simulated seconds between two readings (1,000 readings/s in all)


def _rules(specs: list[dict[str, Any]]) -> list[Rule]:
    return [Rule.model_validate(spec) for spec in specs]


# Ten threshold rules, all matching every reading (kind temperature): 10 evaluations each.
THRESHOLD = _rules(
    [
        {"name": "t-above-80", "match": {"kind": "temperature"}, "above": 80},
        {"name": "t-above-85-hyst", "match": {"kind": "temperature"}, "above": 85,
         "clear_below": 80},
        {"name": "t-above-90-for", "match": {"kind": "temperature"}, "above": 90,
         "for": "10s"},
        {"name": "t-below-0", "match": {"kind": "temperature"}, "below": 0},
        {"name": "t-below-5-hyst", "match": {"kind": "temperature"}, "below": 5,
         "clear_above": 8},
        {"name": "t-outside", "match": {"kind": "temperature"}, "outside": [-10, 95]},
        {"name": "t-inside", "match": {"kind": "temperature"}, "inside": [99, 101]},
        {"name": "t-above-70-keep", "match": {"kind": "temperature"}, "above": 70,
         "keep_firing_for": "30s"},
        {"name": "t-above-75", "match": {"kind": "temp*"}, "above": 75},
        {"name": "t-any-above-100", "above": 100},
    ]
)  # fmt: skip

# Ten rules of mixed kinds over four sensor kinds: thresholds, windows, rate, deadman.
MIXED = _rules(
    [
        {"name": "temp-high", "match": {"kind": "temperature"}, "above": 80,
         "clear_below": 75, "for": "10s"},
        {"name": "temp-low", "match": {"kind": "temperature"}, "below": 0},
        {"name": "temp-rise", "match": {"kind": "temperature"}, "above": 30,
         "rate": {"per": "1m", "window": "1m", "max_samples": 64}},
        {"name": "humidity-band", "match": {"kind": "humidity"}, "outside": [30, 60]},
        {"name": "humidity-avg", "match": {"kind": "humidity"}, "above": 65,
         "aggregate": {"fn": "avg", "window": "1m", "max_samples": 64}},
        {"name": "pressure-high", "match": {"kind": "pressure"}, "above": 6,
         "keep_firing_for": "1m"},
        {"name": "pressure-p95", "match": {"kind": "pressure"}, "above": 7,
         "aggregate": {"fn": "p95", "window": "1m", "max_samples": 64}},
        {"name": "vibration-max", "match": {"kind": "vibration"}, "above": 8,
         "aggregate": {"fn": "max", "window": "1m", "max_samples": 64}},
        {"name": "vibration-flap", "match": {"kind": "vibration"}, "above": 9,
         "flapping": {"low": 0.25, "high": 0.5}},
        {"name": "silent", "absent_for": "5m"},
    ]
)  # fmt: skip

# Windowed rules only: their own figure and ratio.
WINDOWED = _rules(
    [
        {"name": "avg", "match": {"kind": "temperature"}, "above": 80,
         "aggregate": {"fn": "avg", "window": "1m", "max_samples": 64}},
        {"name": "max", "match": {"kind": "temperature"}, "above": 85,
         "aggregate": {"fn": "max", "window": "1m", "max_samples": 64}},
        {"name": "p95", "match": {"kind": "temperature"}, "above": 90,
         "aggregate": {"fn": "p95", "window": "1m", "max_samples": 64}},
        {"name": "rate", "match": {"kind": "temperature"}, "above": 20,
         "rate": {"per": "1m", "max_samples": 64}},
    ]
)  # fmt: skip

# The threshold scenario's ten rules and two rules across sensors (aggregate.by): every
# reading also enters the window of its site (10 sites, 100 readings/s each, so both
# windows are full at 1,000 samples) and is judged on the site's average or maximum.
GROUPED = [
    *THRESHOLD,
    *_rules(
        [
            {"name": "site-avg", "match": {"kind": "temperature"}, "above": 60,
             "aggregate": {"fn": "avg", "window": "1m", "by": ["site", "kind"]}},
            {"name": "site-max", "match": {"kind": "temperature"}, "above": 99,
             "clear_below": 90,
             "aggregate": {"fn": "max", "window": "10s", "by": ["site"]}},
        ]
    ),
]  # fmt: skip

SCENARIOS: dict[str, tuple[list[Rule], tuple[str, ...]]] = {
    "threshold": (THRESHOLD, ("temperature",)),
    "mixed": (MIXED, ("temperature", "humidity", "pressure", "vibration")),
    "windowed": (WINDOWED, ("temperature",)),
    "grouped": (GROUPED, ("temperature",)),
}

BASE = {"temperature": 50.0, "humidity": 45.0, "pressure": 4.0, "vibration": 3.0}
SPIKE = {"temperature": 45.0, "humidity": 25.0, "pressure": 3.5, "vibration": 7.0}


@dataclass(frozen=True)
class Sensor:
    site: str
    device: str
    kind: str
    labels: dict[str, str]


def make_sensors(n: int, kinds: Sequence[str]) -> list[Sensor]:
    return [Sensor(f"plant-{i % 10}", f"d-{i}", kinds[i % len(kinds)], {}) for i in range(n)]


def make_chunk(
    sensors: list[Sensor], start: int, count: int, rng: random.Random, excursions: float
) -> list[Reading]:
    """Readings start..start+count: sensor i % S, ordinary values, a share of excursions."""
    out = []
    n = len(sensors)
    trusted = Reading.trusted
    for i in range(start, start + count):
        s = sensors[i % n]
        value = BASE[s.kind] + rng.uniform(-5, 5) * BASE[s.kind] / 50
        if rng.random() < excursions:
            value += SPIKE[s.kind] * rng.uniform(0.8, 1.2)
        out.append(trusted(s.site, s.device, s.kind, value, T0 + i * STEP, s.labels, None))
    return out


def bare_loop(readings: list[Reading], per_kind: dict[str, list[tuple[str, float]]]) -> int:
    """The reference: per (rule, reading), one dict lookup and one comparison."""
    thresholds = {name: thr for rules in per_kind.values() for name, thr in rules}
    names_by_kind = {kind: [name for name, _ in rules] for kind, rules in per_kind.items()}
    hits = 0
    for reading in readings:
        value = reading.value
        for name in names_by_kind[reading.kind]:
            if value > thresholds[name]:
                hits += 1
    return hits


def state_bytes(rules: list[Rule], sensors: list[Sensor], rng: random.Random) -> dict[str, Any]:
    """Memory the engine allocates for its (rule, sensor) states, all overhead included
    (sensor entries, label dicts, index): one reading per sensor, measured by tracemalloc."""
    first = make_chunk(sensors, 0, len(sensors), rng, 0.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(rules, start=T0)
    for reading in first:
        engine.evaluate(reading, reading.ts)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    states = engine.state_count
    return {
        "states": states,
        "bytes_total": after - before,
        "bytes_per_state": round((after - before) / states, 1),
    }


@dataclass(frozen=True)
class Config:
    sensors: int
    readings: int
    chunk: int
    seed: int
    excursions: float


def run_scenario(name: str, cfg: Config) -> dict[str, Any]:
    sensors_n, readings_n, chunk, seed = cfg.sensors, cfg.readings, cfg.chunk, cfg.seed
    rules, kinds = SCENARIOS[name]
    sensors = make_sensors(sensors_n, kinds)
    rng = random.Random(seed)
    memory = state_bytes(rules, sensors, random.Random(seed))
    engine = RuleEngine(rules, start=T0)
    # the same rules without the quiet-band fold: every (rule, reading) judged one by one
    unfolded = RuleEngine(rules, start=T0, fold=False)
    per_kind: dict[str, list[tuple[str, float]]] = {}
    for kind in kinds:
        matching = [r for r in rules if r.matches({"site": "plant-0", "device": "d", "kind": kind})]
        per_kind[kind] = [(r.name, r.threshold or 0.0) for r in matching if r.absent_for is None]
    evaluations = 0
    engine_s = unfolded_s = bare_s = tick_s = 0.0
    ticks = 0
    transitions: dict[str, int] = {}
    next_tick = T0 + 1.0
    done = 0
    while done < readings_n:
        n = min(chunk, readings_n - done)
        readings = make_chunk(sensors, done, n, rng, cfg.excursions)
        evaluations += sum(len(per_kind[r.kind]) for r in readings)
        gc.disable()
        t = time.process_time()
        evaluate = engine.evaluate
        out = []
        for reading in readings:
            got = evaluate(reading, reading.ts)
            if got:
                out += got
        engine_s += time.process_time() - t
        t = time.process_time()
        evaluate = unfolded.evaluate
        for reading in readings:
            evaluate(reading, reading.ts)
        unfolded_s += time.process_time() - t
        # ticks, once per simulated second, timed apart
        t = time.process_time()
        end = readings[-1].ts
        while next_tick <= end:
            out += engine.tick(next_tick)
            next_tick += 1.0
            ticks += 1
        tick_s += time.process_time() - t
        t = time.process_time()
        bare_loop(readings, per_kind)
        bare_s += time.process_time() - t
        gc.enable()
        for tr in out:
            transitions[tr.status] = transitions.get(tr.status, 0) + 1
        done += n
        print(f"[bench.rules] {name}: {done:,}/{readings_n:,} readings", file=sys.stderr)
    engine_rate = evaluations / engine_s
    bare_rate = evaluations / bare_s
    return {
        "rules": len(rules),
        "sensors": sensors_n,
        "readings": readings_n,
        "evaluations": evaluations,
        "engine": {
            "seconds": round(engine_s, 3),
            "evaluations_per_s": round(engine_rate),
            "readings_per_s": round(readings_n / engine_s),
        },
        "engine_unfolded": {
            "seconds": round(unfolded_s, 3),
            "evaluations_per_s": round(evaluations / unfolded_s),
        },
        "bare_loop": {"seconds": round(bare_s, 3), "evaluations_per_s": round(bare_rate)},
        "ratio_to_bare": round(engine_rate / bare_rate, 3),
        "unfolded_ratio_to_bare": round(evaluations / unfolded_s / bare_rate, 3),
        "ticks": {
            "count": ticks,
            "mean_ms": round(tick_s / ticks * 1000, 3) if ticks else None,
            "states": engine.state_count,
        },
        "transitions": transitions,
        "memory": memory,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--excursions",
        type=float,
        default=0.005,
        help="share of readings that jump past the thresholds (default 0.005)",
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="default: all"
    )
    args = parser.parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    cfg = Config(args.sensors, args.readings, args.chunk, args.seed, args.excursions)
    result = {
        "benchmark": "rules",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "config": vars(args) | {"scenario": scenarios},
        "scenarios": {s: run_scenario(s, cfg) for s in scenarios},
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
