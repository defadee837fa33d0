"""`python -m bench` runs end to end on a small load and prints the JSON it promises.

No rate is asserted: the machines are 2 noisy cores (CONVENTIONS.md point 10); only that
both receivers got every message and that a ratio came out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 2000


@pytest.mark.timeout(60)
def test_bench_prints_a_complete_comparison() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--messages", str(MESSAGES), "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    assert result["benchmark"] == "mqtt_ingest"
    assert result["messages"] == MESSAGES
    assert set(result["scenarios"]) == {"qos1_backlog", "qos0_live"}
    backlog = result["scenarios"]["qos1_backlog"]
    for receiver in ("mosquitto_sub", "sensord"):
        assert backlog[receiver]["received"] == [MESSAGES], receiver
        assert backlog[receiver]["median"] > 0, receiver
    for name, scenario in result["scenarios"].items():
        ratio = scenario["ratio"]
        assert isinstance(ratio, float), name
        assert ratio > 0, name
