"""`python -m bench.formats` runs end to end on a tiny load and prints the JSON it promises.

No rate is asserted (CONVENTIONS.md point 10): only that for each format the whole
`sensord run` counted exactly the readings the backlog holds (births and states through the
format's own decoder), got every message, refused none, and that the figures the issue asks
for (readings/s beside the native format's, readings per message, the ratio to
mosquitto_sub) came out. Home Assistant is the format with a learn run that matters: its
state topics are subscribed only after sensord has read the discovery configs.
"""

from __future__ import annotations

import pytest

from tests.support import run_bench

MESSAGES = 300
DEVICES = 30
FORMATS = ("sensord", "zigbee2mqtt", "homeassistant")


@pytest.mark.timeout(120)
def test_formats_bench_counts_every_reading_of_each_format_beside_the_native_one() -> None:
    result = run_bench(
        "bench.formats",
        *("--messages", str(MESSAGES), "--devices", str(DEVICES)),
        *("--runs", "1", "--formats", ",".join(FORMATS)),
        timeout=115,
    )

    assert result["benchmark"] == "formats"
    assert result["scope"] == "product: whole sensord run"
    assert (result["messages"], result["devices"]) == (MESSAGES, DEVICES)
    assert set(result["formats"]) == set(FORMATS)
    assert result["broker"]["max_inflight_messages"] == 20  # Mosquitto's stock window
    assert {"python", "sensord", "mosquitto", "rabbitmq"} <= set(result["versions"])
    assert set(result["summary"]) == set(FORMATS)
    for fmt in FORMATS:
        agg = result["results"][fmt]
        assert agg["errors"] == [], fmt
        assert agg["complete"] is True, fmt
        (run,) = agg["runs"]
        sensord = run["sensord"]
        assert sensord["checks"] == dict.fromkeys(sensord["checks"], True), fmt
        assert run["state_messages"] >= MESSAGES, fmt
        assert sensord["readings"] == run["expected"]["readings"] > 0, fmt
        assert sensord["messages"] == run["messages"] == run["mosquitto_sub"]["received"], fmt
        assert sensord["readings_per_s"] > 0, fmt
        assert run["ratio_to_mosquitto_sub"] > 0, fmt
        summary = result["summary"][fmt]
        assert summary["readings_per_s"] == sensord["readings_per_s"], fmt
        assert summary["complete"] is True, fmt

    assert result["summary"]["sensord"]["ratio_to_native"] == 1.0
    assert result["summary"]["sensord"]["readings_per_message"] == 1.0
    # a Zigbee2MQTT object of the simulated WSDCGQ11LM carries 6 numbers: 6 readings
    z2m = result["results"]["zigbee2mqtt"]["runs"][0]
    assert z2m["readings_per_state_message"] == 6.0
    assert z2m["expected"]["from_states"] == 6 * z2m["state_messages"]
    assert result["summary"]["zigbee2mqtt"]["ratio_to_native"] > 0
    # Home Assistant: two sensors share one JSON state topic: 2 readings per state message,
    # which arrive only if the learn run's subscriptions were in sensord's session
    ha = result["results"]["homeassistant"]["runs"][0]
    assert ha["expected"]["from_states"] == 2 * ha["state_messages"]
