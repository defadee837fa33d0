"""Restart of a real sensord subprocess on its state file, over the real brokers: a firing
alert is not announced again, a resolution after the restart is sent, `for` resumes."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.support import MqttPublisher, SensordProcess, WebhookSink, delete_amqp, wait_for

pytestmark = pytest.mark.e2e

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    severity: critical
  - name: humid
    match: {kind: humidity}
    above: 90
    for: 6s
    severity: critical
"""


def names(sink: WebhookSink, status: str) -> list[tuple[str, str]]:
    return sorted((a["labels"]["alertname"], a["labels"]["device"]) for a in sink.alerts(status))


async def test_restart_keeps_alert_state(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    root = f"{sensord.topic_root}/plant-1"
    try:
        sensord.start()
        await sensord.wait_ready()
        pending_from = time.time()
        mqtt_pub.publish(f"{root}/h-1/humidity", "95")  # pending: `for` 6 s
        mqtt_pub.publish(f"{root}/t-1/temperature", "90")
        mqtt_pub.publish(f"{root}/t-2/temperature", "90")
        await wait_for(lambda: len(webhook.alerts("firing")) == 2)
        assert names(webhook, "firing") == [("hot", "t-1"), ("hot", "t-2")]
        assert await sensord.stop() == 0
        stopped_at = time.time()
        assert (sensord.workdir / "var" / "sensord.db").is_file()

        sensord.start()
        await sensord.wait_ready()
        assert "3 alert state(s)" in sensord.stderr()  # 2 firing, 1 pending
        mqtt_pub.publish(f"{root}/t-1/temperature", "91")  # still firing: not announced again
        mqtt_pub.publish(f"{root}/t-2/temperature", "60")  # cleared while we were away
        await wait_for(lambda: names(webhook, "resolved") == [("hot", "t-2")])
        # the pending `for` resumed: it fires without a new reading, from its first one
        await wait_for(lambda: ("humid", "h-1") in names(webhook, "firing"), timeout=20)
        mqtt_pub.publish(f"{root}/t-1/temperature", "70")
        await wait_for(lambda: len(webhook.alerts("resolved")) == 2)
        assert await sensord.stop() == 0
    finally:
        if sensord.proc is not None and sensord.proc.poll() is None:
            sensord.proc.kill()
            sensord.proc.wait()
        await delete_amqp(sensord.prefix, sensord.queues())

    assert names(webhook, "firing") == [("hot", "t-1"), ("hot", "t-2"), ("humid", "h-1")]
    assert names(webhook, "resolved") == [("hot", "t-1"), ("hot", "t-2")]
    [humid] = [a for a in webhook.alerts("firing") if a["labels"]["alertname"] == "humid"]
    starts = datetime.fromisoformat(humid["startsAt"]).timestamp()
    assert pending_from - 1 <= starts < stopped_at  # the timer began before the restart
    by_device = {a["labels"]["device"]: a["fingerprint"] for a in webhook.alerts("firing")}
    for resolved in webhook.alerts("resolved"):
        assert resolved["fingerprint"] == by_device[resolved["labels"]["device"]]


async def test_a_state_file_from_another_version_stops_sensord_with_one_clear_line(
    sensord: SensordProcess,
) -> None:
    import sqlite3

    sensord.rules_yaml = "rules: []\n"
    db = sensord.workdir / "var" / "sensord.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE rule_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO rule_meta VALUES ('schema_version', '99')")
    conn.commit()
    conn.close()
    sensord.start()
    assert sensord.proc is not None
    rc = sensord.proc.wait(timeout=30)
    assert rc == 1
    err = sensord.stderr()
    assert f"sensord: {db}: state file schema 99" in err
    assert "Traceback" not in err
