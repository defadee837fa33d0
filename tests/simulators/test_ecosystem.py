"""`sensord-sim --format <ecosystem>`: devices of a real ecosystem over a real Mosquitto,
read back by sensord's own format of that name."""

from __future__ import annotations

import asyncio
import time

from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions
from tests.support import MqttRecorder, PrivateMosquitto, run_sim, wait_for


async def test_tasmota_devices_publish_births_reports_and_deaths(broker: PrivateMosquitto) -> None:
    recorder = MqttRecorder("#", broker.port)
    try:
        await wait_for(lambda: recorder.subscribed)
        done = await asyncio.to_thread(
            run_sim,
            "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--format", "tasmota",
            "--sites", "1", "--sensors", "2", "--kinds", "temperature,humidity",
            "--rate", "20", "--count", "6", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        await wait_for(lambda: sum(t.endswith("/LWT") for t, _p, _r in recorder.messages) == 4)
    finally:
        recorder.close()
    topics = [t for t, _p, _r in recorder.messages]
    lwt = [(t, p) for t, p, _r in recorder.messages if t.endswith("/LWT")]
    # each device: Online at its birth, Offline at the end
    assert sorted(lwt) == [
        ("tele/plant-1-dev-1/LWT", b"Offline"),
        ("tele/plant-1-dev-1/LWT", b"Online"),
        ("tele/plant-1-dev-2/LWT", b"Offline"),
        ("tele/plant-1-dev-2/LWT", b"Online"),
    ]
    sensor = [(t, p) for t, p, _r in recorder.messages if t.endswith("/SENSOR")]
    assert len(sensor) == 6  # --count reports, spread over the two devices
    assert {t for t, _p in sensor} == {"tele/plant-1-dev-1/SENSOR", "tele/plant-1-dev-2/SENSOR"}
    # sensord's tasmota format reads them: temperature and humidity per device
    fmt = formats.create("tasmota", FormatOptions("x/{site}/{device}/{kind}", 65536))
    readings = [r for t, p in sensor for r in fmt.parse(t, p, time.time())]
    kinds = {(r.device, r.kind) for r in readings}
    assert {("plant-1-dev-1", "temperature"), ("plant-1-dev-2", "humidity")} <= kinds
    assert all(15 < r.value < 35 for r in readings if r.kind == "temperature")
    assert '"sent"' in done.stdout
    assert topics.index("tele/plant-1-dev-1/LWT") < topics.index("tele/plant-1-dev-1/SENSOR")


def test_an_ecosystem_format_refuses_native_only_flags() -> None:
    done = run_sim("--format", "zigbee2mqtt", "--fault", "spike=0.1", "--count", "1")
    assert done.returncode == 2
    assert "--fault: only with the native formats" in done.stderr
