"""Shipped scenarios through a running sensord (the heatwave one is tests/test_quickstart.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.support import SensordProcess, WebhookSink, running, uid, wait_for
from tests.test_simulator import _sim_argv, _sim_env

pytestmark = pytest.mark.e2e

SILENT_RULES = """
rules:
  - name: sensor-silent
    match: {kind: temperature}
    absent_for: 3s
    severity: warning
    annotations:
      summary: "{site}/{device} sent no temperature for 3s"
"""


async def test_sensor_dropout_scenario_fires_sensor_silent_for_that_device_only(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    sensord.rules_yaml = SILENT_RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    async with running(sensord):
        sim = subprocess.Popen(  # noqa: ASYNC220 - runs beside sensord, stopped below
            _sim_argv(
                *("--topic-root", sensord.topic_root, "--sites", "2", "--sensors", "3"),
                *("--rate", "2", "--scenario", "sensor-dropout", "--quiet"),
                *("--client-id", f"simtest-pub-{uid()}"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_sim_env(),
        )
        started = time.monotonic()
        try:
            # t-1 of plant-1 goes silent 5 s in; absent for 3 s -> firing about 8 s in.
            await wait_for(lambda: webhook.alerts("firing"), timeout=20)
            fired_after = time.monotonic() - started
            await asyncio.sleep(1)  # let any wrong extra alert arrive too
        finally:
            sim.terminate()
            _, err = sim.communicate(timeout=15)
        assert sim.returncode == 0, err
        assert await sensord.stop() == 0
    firing = webhook.alerts("firing")
    assert [(a["labels"]["site"], a["labels"]["device"]) for a in firing] == [("plant-1", "t-1")]
    assert firing[0]["labels"]["alertname"] == "sensor-silent"
    assert 7.0 <= fired_after <= 15.0, fired_after
