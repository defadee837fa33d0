"""Status page history benchmark: `python -m bench.history [--sensors N] [--steps S]`.

JSON on stdout, progress on stderr. What the per-sensor history ring (sensord/http/history.py)
costs on the per-reading hot path, measured against a reference in the same run:

- `ingest`: CPU time per reading of the edge's hot path without the history hook
  (`RuleEngine.evaluate` with the shipped example rules, as `Service._on_reading` calls
  it) and with it (`History.record` then `evaluate`); their difference and ratio;
- `record_only`: `History.record` alone per reading;
- `memory`: bytes per sensor held by the history (tracemalloc), right after every sensor
  reported once and again after every sensor filled its ring more than once over (no
  growth: the ring is preallocated);
- `page`: what the page's reads cost with that many sensors: the overview's sensor counts
  (every sensor) and one page of 200 sensors with sparklines, serialised to JSON.

Two scenarios of `--steps` rounds (default 40) in which every sensor reports once: every
`--interval` seconds of simulated time (default 10 s: most readings land in the bucket
written last, the fast path), and every 180 s (two hours: every reading opens a new
bucket and every ring wraps). Readings are built per round outside the clock, with the
same name strings every round, as the topic parser's cache hands them out. Times are CPU
time of this process (time.process_time), the best of `--runs` repetitions; nothing here
is asserted as a limit (CONVENTIONS.md, point 10).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensord.events import Reading
from sensord.http.history import History
from sensord.http.statuspage import StatusPage
from sensord.rules import Rule, RuleEngine, load_rules

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_764_331_200.0


def make_round(names: list[tuple[str, str]], t: float, rng: random.Random) -> list[Reading]:
    # the same name strings every round, as the topic parser's cache hands them out
    return [
        Reading.trusted(site, device, "temperature", 20.0 + rng.random() * 10, t, {}, "C")
        for site, device in names
    ]


def timed(
    rounds: list[tuple[float, list[Reading]]], hook: Callable[[Reading, float], Any]
) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        for now, chunk in rounds:
            for r in chunk:
                hook(r, now)
        return time.process_time() - started
    finally:
        gc.enable()


def ingest(
    rules: list[Rule], rounds: list[tuple[float, list[Reading]]], runs: int
) -> dict[str, Any]:
    """The hot path without and with the history hook, and the hook alone: best of runs."""
    best: dict[str, float] = {}
    for _ in range(runs):
        engine = RuleEngine(rules, start=T0)
        ref = timed(rounds, engine.evaluate)  # the reference: the hot path without the hook

        engine = RuleEngine(rules, start=T0)
        history = History()

        def both(r: Reading, now: float, h: History = history, e: RuleEngine = engine) -> None:
            h.record(r, now)
            e.evaluate(r, now)

        with_hook = timed(rounds, both)
        alone = timed(rounds, History().record)
        for key, value in (("ref", ref), ("with", with_hook), ("alone", alone)):
            best[key] = min(best.get(key, value), value)
    us = 1e6 / sum(len(chunk) for _, chunk in rounds)
    return {
        "reference_us_per_reading": round(best["ref"] * us, 3),
        "with_history_us_per_reading": round(best["with"] * us, 3),
        "history_overhead_us_per_reading": round((best["with"] - best["ref"]) * us, 3),
        "ratio": round(best["with"] / best["ref"], 3),
        "record_only_us_per_reading": round(best["alone"] * us, 3),
    }


def make_rounds(
    names: list[tuple[str, str]], steps: int, interval: float
) -> list[tuple[float, list[Reading]]]:
    rng = random.Random(7)
    return [
        (T0 + k * interval + 0.5, make_round(names, T0 + k * interval, rng)) for k in range(steps)
    ]


def run(sensors: int, steps: int, interval: float, runs: int) -> dict[str, Any]:
    rules = load_rules(["rules/*.yaml"], ROOT)
    names = [(f"plant-{i % 50}", f"t-{i}") for i in range(sensors)]
    scenarios: dict[str, Any] = {}
    for name, every in ((f"every_{interval:g}s", interval), ("every_180s_rings_wrap", 180.0)):
        print(f"[history] {name}: {steps} rounds of {sensors} readings", file=sys.stderr)
        rounds = make_rounds(names, steps, every)
        scenarios[name] = {"simulated_seconds": steps * every, **ingest(rules, rounds, runs)}
    # the page's reads and the memory over the history of the wrapping scenario
    rounds = make_rounds(names, steps, 180.0)
    readings = sensors * steps

    # memory: after one reading per sensor, then after the whole run (rings wrapped)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History()
    first_now, first = rounds[0]
    for r in first:
        history.record(r, first_now)
    after_first = tracemalloc.get_traced_memory()[0] - before
    for now, chunk in rounds[1:]:
        for r in chunk:
            history.record(r, now)
    after_all = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    # the page's reads over that history (the HTTP handlers' work, without HTTP)
    last_now = rounds[-1][0]
    page = StatusPage(history, lambda: rules, dict, 300.0)
    t = time.process_time()
    page.sensor_counts(last_now)  # the first: each sensor's silent limit from the rules
    counts_first_s = time.process_time() - t
    t = time.process_time()
    counts = page.sensor_counts(last_now)  # every later one (cached until a rule reload)
    counts_s = time.process_time() - t
    t = time.process_time()
    first_page = sorted(history, key=lambda s: s.key)[:200]
    body = json.dumps(
        [{"id": s.id, "value": s.value, "spark": history.spark(s, last_now)} for s in first_page]
    )
    page_s = time.process_time() - t

    return {
        "benchmark": "status_page_history",
        "python": platform.python_version(),
        "sensors": sensors,
        "readings_per_scenario": readings,
        "history": {"window_s": history.window, "step_s": history.step, "buckets": history.slots},
        "rules": [r.name for r in rules],
        "scenarios": scenarios,
        "memory": {
            "bytes_per_sensor": round(after_first / sensors),
            "bytes_per_sensor_after_rings_wrapped": round(after_all / sensors),
            "mib_total": round(after_all / 2**20, 1),
        },
        "page": {
            "overview_counts_first_ms": round(counts_first_s * 1e3, 2),
            "overview_counts_ms": round(counts_s * 1e3, 2),
            "sensors_page_200_ms": round(page_s * 1e3, 2),
            "sensors_page_200_bytes": len(body),
            "silent": counts["silent"],
        },
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    p.add_argument("--sensors", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=40, help="readings per sensor")
    p.add_argument("--interval", type=float, default=10.0, help="simulated s between them")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(run(args.sensors, args.steps, args.interval, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
