"""The README's `make run` demo, the way a new user sees it (isolated by env overrides)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import clear_retained, config_queues, delete_amqp, free_port, uid

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


async def test_demo_shows_firing_within_30s_then_resolution_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    tag = uid()
    prefix, topic_root = f"demo{tag}", f"demo-{tag}"
    env = {
        **os.environ,
        "VENV": str(Path(sys.executable).parent.parent),
        "SENSORD_AMQP__PREFIX": prefix,
        "SENSORD_MQTT__TOPICS": f'["{topic_root}/#"]',
        "SENSORD_MQTT__TOPIC_TEMPLATE": f"{topic_root}/{{site}}/{{device}}/{{kind}}",
        "SENSORD_MQTT__CLIENT_ID": f"sensord-demo-{tag}",
        "SENSORD_MQTT__PERSISTENT_SESSION": "false",
        "SENSORD_HTTP__LISTEN": f"127.0.0.1:{free_port()}",
        "SIM_ARGS": f"--topic-root {topic_root}",
        # the Zigbee2MQTT thermometers under the test's own prefix, and the source to match
        "SIM_Z2M_ARGS": f"--topic-root {topic_root}",
        "SENSORD_MQTT__SOURCES": json.dumps(
            [
                {
                    "name": "zigbee",
                    "format": "zigbee2mqtt",
                    "site": "home",
                    "base_topic": f"{topic_root}/zigbee2mqtt",
                }
            ]
        ),
        # its own state file: alerts a developer's `make run` left firing must not count
        "SENSORD_STATE__PATH": str(tmp_path / "state.db"),
        "PYTHONUNBUFFERED": "1",
    }
    out_path = tmp_path / "demo.out"
    start = time.monotonic()
    with out_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a background process, never waited on here
            ["bash", "scripts/run-demo.sh"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    fired_at = resolved_at = None
    try:
        while time.monotonic() - start < 75 and resolved_at is None:
            text = out_path.read_text(errors="replace")
            if fired_at is None and re.search(r"FIRING +critical +critical-temperature", text):
                fired_at = time.monotonic() - start
            if re.search(r"RESOLVED +critical +critical-temperature", text):
                resolved_at = time.monotonic() - start
            assert proc.poll() is None, text
            await asyncio.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        await delete_amqp(*config_queues(ROOT / "sensord.toml", env))
        await clear_retained(f"{topic_root}/#")  # the thermometers' availability, bridge/devices
    text = out_path.read_text(errors="replace")
    assert fired_at is not None, text
    assert fired_at <= 30, f"first FIRING after {fired_at:.1f}s"
    assert resolved_at is not None, text
    line = next(ln for ln in text.splitlines() if re.search(r"FIRING +critical", ln))
    assert "plant-1/t-" in line or "home/plant-1-dev-" in line
    # the Zigbee2MQTT thermometers fire the same rule
    assert re.search(r"FIRING +critical +critical-temperature .*home/plant-1-dev-", text), text
    assert "threshold=80" in line
    assert rc == 0, text
    assert "Traceback" not in text
    assert "stopped" in text
