"""`python -m tests.chaos chaos|soak`: the chaos or soak run, a JSON report and a summary.

`make chaos` (CHAOS_MINUTES, default 5) and `make soak` (SOAK_MINUTES, default 30, at
SOAK_RATE 5000 readings/s, no faults) call this. Exit 0 when every target is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.driver import Options, run, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("mode", choices=["chaos", "soak"])
    p.add_argument("--minutes", type=float, default=None, help="chaos 5, soak 30")
    p.add_argument("--rate", type=float, default=None, help="sim readings/s: chaos 500, soak 5000")
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: workdir)")
    p.add_argument("--workdir", type=Path, default=None, help="kept; default a temporary one")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    chaos = args.mode == "chaos"
    minutes = args.minutes if args.minutes is not None else (5.0 if chaos else 30.0)
    rate = args.rate if args.rate is not None else (500.0 if chaos else 5000.0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"sensord-{args.mode}-"))
    opts = Options(
        mode=args.mode,
        duration=minutes * 60,
        rate=rate,
        workdir=workdir,
        faults=chaos,
        seed=args.seed,
        sample_interval=2.0 if chaos else 5.0,
    )
    report = asyncio.run(run(opts))
    path = args.report or workdir / f"{args.mode}-report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"JSON report: {path}")
    if args.workdir is None and report["ok"]:
        # keep the logs of a failed run for a look; a passing run leaves only its report
        for child in workdir.iterdir():
            if child != path:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
