"""`python -m bench.product` runs end to end on a tiny load and prints the JSON it promises.

No rate is asserted (CONVENTIONS.md point 10): only that every reading reached sensord and
mosquitto_sub, that the storm's transitions happened, each on RabbitMQ and accounted for
in the state file, and that the figures the issue asks for came out.
"""

from __future__ import annotations

import pytest

from bench.product_load import expected
from tests.support import run_bench

READINGS = 2000
SENSORS = 200


@pytest.mark.timeout(60)
def test_product_bench_drains_calm_and_storm_and_accounts_for_every_transition() -> None:
    result = run_bench(
        "bench.product",
        *("--readings", str(READINGS), "--sensors", str(SENSORS)),
        *("--runs", "1", "--windows", "20", "--shapes", "calm,storm"),
        timeout=55,
    )

    assert result["benchmark"] == "product"
    assert result["scope"] == "product: whole sensord run"
    assert (result["readings"], result["sensors"]) == (READINGS, SENSORS)
    assert set(result["results"]) == {"window_20"}
    assert set(result["summary"]["window_20"]) >= {
        "calm_ratio",
        "storm_transitions_per_s",
        "storm_transition_fraction",
        "calm_metrics_p99_ms",
        "calm_metrics_max_ms",
        "storm_metrics_p99_ms",
        "storm_metrics_max_ms",
    }
    assert {"python", "sensord", "mosquitto", "rabbitmq"} <= set(result["versions"])
    shapes = result["results"]["window_20"]
    for shape in ("calm", "storm"):
        assert shapes[shape]["errors"] == [], shape
        (run,) = shapes[shape]["runs"]
        sensord = run["sensord"]
        assert sensord["readings"] == READINGS, shape
        assert run["mosquitto_sub"]["received"] == READINGS, shape
        assert sensord["checks"] == dict.fromkeys(sensord["checks"], True), shape
        assert sensord["state_file"]["outbox_rows"] == 0, shape
        assert sensord["metrics_during_drain"]["count"] >= 1, shape
        assert run["ratio"] > 0, shape
        assert shapes[shape]["complete"] is True, shape

    calm = shapes["calm"]["runs"][0]["sensord"]
    assert calm["transitions"] == 0
    assert calm["on_rabbitmq"] == 0

    storm = shapes["storm"]["runs"][0]["sensord"]
    want = expected("storm", READINGS, SENSORS)
    assert storm["transitions"] == want.transitions > 0
    assert storm["transition_fraction"] >= 0.3  # the storm: >= 30 %
    assert storm["on_rabbitmq"] == storm["transitions"]
    assert storm["state_file"]["active_alerts"] == want.firing_at_end > 0
    assert storm["transitions_per_s"] > 0
