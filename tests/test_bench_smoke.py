"""`python -m bench` runs end to end on a small load and prints the JSON it promises.

No rate is asserted: the machines are 2 noisy cores (CONVENTIONS.md point 10); only that
both receivers got every message and that a ratio came out.
"""

from __future__ import annotations

import pytest

from tests.support import run_bench

MESSAGES = 2000


@pytest.mark.timeout(60)
def test_bench_prints_a_complete_comparison() -> None:
    result = run_bench(
        "bench", "--messages", str(MESSAGES), "--runs", "1", "--sensors", "500", timeout=50
    )

    assert result["benchmark"] == "mqtt_ingest"
    assert result["messages"] == MESSAGES
    assert set(result["scenarios"]) == {"qos1_backlog", "qos0_live"}
    backlog = result["scenarios"]["qos1_backlog"]
    assert result["sensors"] == 500
    for receiver in ("mosquitto_sub", "paho", "sensord"):
        assert backlog[receiver]["received"] == [MESSAGES], receiver
        assert backlog[receiver]["median"] > 0, receiver
    for name, scenario in result["scenarios"].items():
        for key in ("ratio", "ratio_to_paho"):
            assert isinstance(scenario[key], float), (name, key)
            assert scenario[key] > 0, (name, key)
        assert scenario["sensord_peak_rss_mib"] > 10, name
