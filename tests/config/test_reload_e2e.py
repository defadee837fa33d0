"""Hot reload of a real sensord subprocess: SIGHUP and POST /-/reload."""

from __future__ import annotations

import signal

import aiohttp
import pytest

from tests.support import MqttPublisher, SensordProcess, WebhookSink, running, wait_for

pytestmark = pytest.mark.e2e

V1 = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    severity: critical
"""

V2 = (
    V1
    + """
  - name: cold
    match: {kind: temperature}
    below: 10
    severity: critical
"""
)

BAD = (
    V2
    + """
  - name: broken
    above: 1
    for: soon
"""
)


TOKEN = "reload-t0ken"  # noqa: S105 - a test token, not a secret


async def post_reload(
    sensord: SensordProcess, token: str | None = TOKEN
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(sensord.base_url + "/-/reload", headers=headers) as r,
    ):
        return r.status, await r.json()


def alerts(sink: WebhookSink, status: str) -> list[str]:
    return [a["labels"]["alertname"] for a in sink.alerts(status)]


async def test_reload_by_signal_and_http(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = V1
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    (sensord.workdir / "token").write_text(TOKEN + "\n")
    sensord.extra_toml = 'token_file = "token"\n'  # in [http]: POST /-/reload needs it
    rules_file = sensord.workdir / "rules" / "test.yaml"
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    async with running(sensord):
        assert (await sensord.metrics())["sensord_rules_loaded"] == 1
        mqtt_pub.publish(topic, "85")
        await wait_for(lambda: alerts(webhook, "firing") == ["hot"])

        rules_file.write_text(V2)
        assert sensord.proc is not None
        sensord.proc.send_signal(signal.SIGHUP)
        await sensord.wait_metric("sensord_rules_loaded", 2)
        mqtt_pub.publish(topic, "86")  # `hot` is unchanged and kept its state: no new firing
        mqtt_pub.publish(topic, "5")  # `cold` is new
        await wait_for(lambda: alerts(webhook, "firing") == ["hot", "cold"])
        await wait_for(lambda: alerts(webhook, "resolved") == ["hot"])

        rules_file.write_text(V1)  # without the token (or with a wrong one): refused
        for token in (None, "wrong"):
            status, body = await post_reload(sensord, token)
            assert (status, body) == (401, {"error": "missing or wrong bearer token"})
        assert (await sensord.metrics())["sensord_rules_loaded"] == 2  # V2 still runs

        rules_file.write_text(BAD)
        status, body = await post_reload(sensord)
        assert status == 500
        assert body["status"] == "refused"
        assert body["errors"] == [
            f"{rules_file}:15: rule 'broken': for: invalid duration 'soon':"
            " use a number and a unit, e.g. '5s', '2m'"
        ]
        sensord.proc.send_signal(signal.SIGHUP)
        metrics = await sensord.wait_metric("sensord_rules_reload_failures_total", 2)
        assert metrics["sensord_rules_loaded"] == 2  # the old rules still run
        await wait_for(lambda: f"{rules_file}:15:" in sensord.stderr())
        mqtt_pub.publish(topic, "50")  # cold clears under the rules kept in force
        await wait_for(lambda: alerts(webhook, "resolved") == ["hot", "cold"])

        rules_file.write_text(V1)
        status, body = await post_reload(sensord)
        assert (status, body) == (200, {"status": "reloaded"})
        assert (await sensord.metrics())["sensord_rules_loaded"] == 1
        assert await sensord.stop() == 0
