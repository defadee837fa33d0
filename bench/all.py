"""`make bench`: every benchmark in turn, each in its own process; one JSON object out.

`python -m bench.all [NAME ...]` with names among ingest, rules, notify, simulator,
latency, history, product, ceiling, formats, telemetry, cluster (default: all). Each benchmark's
own JSON becomes one key of the result; a benchmark that fails is reported with its exit
code and the tail of its stderr, and the others still run. Progress goes to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

BENCHES: dict[str, list[str]] = {
    "ingest": ["-m", "bench"],
    "rules": ["-m", "bench.rules"],
    "notify": ["-m", "bench.notify"],
    "simulator": ["-m", "bench.simulator"],
    "latency": ["-m", "bench.latency"],
    "history": ["-m", "bench.history"],
    # the whole `sensord run` as users run it; the others measure sub-assemblies
    "product": ["-m", "bench.product"],
    # no sensord: the leanest Python receiver and the stack's imports beside mosquitto_sub
    "ceiling": ["-m", "bench.ceiling"],
    # readings/s per payload format (Zigbee2MQTT, Tasmota, …) through the whole sensord run
    "formats": ["-m", "bench.formats"],
    # the whole `sensord run` with and without [telemetry] stream = true
    "telemetry": ["-m", "bench.telemetry"],
    # a local 1-node and 3-node RabbitMQ cluster: transitions/s and failover time
    "cluster": ["-m", "bench.cluster"],
}


def run_one(name: str) -> dict[str, Any]:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *BENCHES[name]], capture_output=True, text=True, check=False
    )
    took = round(time.monotonic() - started, 1)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        return {
            "error": f"exit {proc.returncode}",
            "stderr_tail": proc.stderr[-2000:],
            "seconds": took,
        }
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"error": "output is not one JSON object", "stdout_tail": proc.stdout[-2000:]}
    result.setdefault("seconds", took)
    return result


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    results = {name: run_one(name) for name in names}
    print(json.dumps({"benchmarks": results}, indent=2))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
