"""The cyclic garbage collector, tuned for a daemon that holds a large, stable heap.

sensord keeps per-sensor state (rule states, history rings, duplicate guards, active
alerts) for tens of thousands of sensors: a few hundred thousand long-lived objects that
every full (generation 2) collection walks, ~0.1 s each on these machines, on the event
loop. With CPython's default thresholds (700, 10, 10) an alert storm over 10,000 new
sensors ran 16 full collections in a 14 s drain: 1.4 s of stalls, which an HTTP request
that needs several loop passes met several times (/metrics up to 0.5 s), and a third of
the process's CPU (bench.product; docs/operations.md, "Memory and the garbage collector").

Two measures, both standard for long-running CPython services:
- `freeze()` once the service is built (modules, classes, settings, rules, restored
  state): those objects are permanent, and the collector stops walking them;
- higher thresholds (`THRESHOLDS`): younger collections run less often, so fewer objects
  survive into the old generation for no reason, and full collections come rarely
  (2 instead of 16 in the same drain, the drain's CPU -30 %).
sensord's garbage is nearly all freed by reference counting; cycles (exceptions with
tracebacks, closed connections) are still collected, just later.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 10)


def tune() -> None:
    """At start, before the service is built."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Once the service is built and its state restored."""
    gc.collect()
    gc.freeze()
