"""`python -m bench.telemetry` runs end to end on a tiny load and prints the JSON it promises.

No rate is asserted (CONVENTIONS.md point 10): only that both variants drained the whole
backlog and that the stream (over 2 partitions) held every reading exactly once.
"""

from __future__ import annotations

import pytest

from tests.support import run_bench

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_telemetry_bench_compares_both_variants_and_checks_the_stream() -> None:
    result = run_bench(
        "bench.telemetry",
        *("--readings", "2000", "--sensors", "200", "--runs", "1", "--partitions", "2"),
        timeout=110,
    )
    assert result["benchmark"] == "telemetry"
    (run,) = result["runs_detail"]
    assert set(run["order"]) == {"off", "stream"}
    for variant in ("off", "stream"):
        assert "error" not in run[variant], run[variant]  # the measurement's own failure
        assert run[variant]["exit_code"] == 0, run[variant]
        assert run[variant]["readings_per_s"] > 0
    assert run["stream"]["telemetry_published"] == 2000
    assert run["stream"]["stream_readings"] == 2000
    assert result["summary"]["stream_exactly_once"] is True
    assert result["summary"]["ratio"] > 0
    assert result["summary"]["forwarding_cost"] == pytest.approx(1 - result["summary"]["ratio"])
    # the stream run over 2 partitions read back whole from both streams (above); the
    # sub-assembly with 4 partitions sent a message per partition present per batch
    assert result["partitions"] == 2
    (alone,) = result["stream_alone"]["runs"]
    (alone_4,) = result["stream_alone_partitions"]["runs"]
    assert (alone["partitions"], alone_4["partitions"]) == (1, 4)
    assert alone_4["messages"] > alone["messages"]
