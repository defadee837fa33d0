"""bench/history.py runs and reports what it claims (no timing is asserted: CONVENTIONS.md 10)."""

from __future__ import annotations

import pytest

from tests.support import run_bench


@pytest.mark.timeout(60)
def test_history_benchmark_smoke() -> None:
    result = run_bench(
        "bench.history", "--sensors", "300", "--steps", "4", "--runs", "1", timeout=50
    )
    assert result["benchmark"] == "status_page_history"
    assert result["sensors"] == 300
    assert result["readings_per_scenario"] == 1200
    assert set(result["scenarios"]) == {"every_10s", "every_180s_rings_wrap"}
    for scenario in result["scenarios"].values():
        assert scenario["reference_us_per_reading"] > 0
        assert scenario["with_history_us_per_reading"] > 0
        assert isinstance(scenario["ratio"], float)
    memory = result["memory"]
    assert 1920 <= memory["bytes_per_sensor"] < 4000  # 120 buckets of 16 bytes, and objects
    assert memory["bytes_per_sensor_after_rings_wrapped"] < memory["bytes_per_sensor"] * 1.1
    assert result["page"]["silent"] == 0
