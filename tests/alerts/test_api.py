"""Silences, inhibition, acknowledgement and the alerts API, end to end through the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest

from tests.support import MqttPublisher, SensordProcess, WebhookSink, running, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "t0ken-for-tests"  # noqa: S105 - a test token, not a secret
RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    severity: critical
  - name: warm
    match: {kind: temperature}
    above: 60
    severity: warning
"""


def _setup(sensord: SensordProcess, webhook: WebhookSink, alerts_toml: str = "") -> None:
    (sensord.workdir / "token").write_text(TOKEN + "\n")
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    sensord.extra_toml = 'token_file = "token"\n\n[alerts]\n' + alerts_toml


async def _cli(sensord: SensordProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sensord", *args, "-c", str(sensord.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _sent(webhook: WebhookSink) -> list[tuple[str, str]]:
    return [(a["labels"]["alertname"], a["status"]) for b in webhook.bodies for a in b["alerts"]]


async def test_silenced_alert_is_tracked_not_notified_until_the_silence_ends(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    _setup(sensord, webhook)
    async with running(sensord):
        added = await _cli(
            sensord,
            "silences",
            "add",
            "site=plant-9",
            "--for",
            "1h",
            "--comment",
            "maintenance",
            "--json",
        )
        assert added.returncode == 0, added.stderr
        silence_id = json.loads(added.stdout)["id"]
        mqtt_pub.publish(f"{sensord.topic_root}/plant-9/t-1/temperature", b"95")
        await sensord.wait_metric('sensord_alerts_suppressed_total{status="firing"}', 2)
        listed = await _cli(sensord, "alerts")
        assert "suppressed" in listed.stdout
        assert "plant-9/t-1" in listed.stdout
        silences = await _cli(sensord, "silences", "list")
        assert "site=plant-9" in silences.stdout
        assert "maintenance" in silences.stdout
        assert webhook.bodies == []  # held while silenced

        expired = await _cli(sensord, "silences", "expire", silence_id)
        assert expired.returncode == 0, expired.stderr
        await wait_for(lambda: len(_sent(webhook)) >= 1)
        assert await sensord.stop() == 0
    # the critical alert inhibits nothing here (no inhibit rules): both notify
    assert sorted(_sent(webhook)) == [("hot", "firing"), ("warm", "firing")]


async def test_critical_inhibits_warning_on_the_same_device(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    _setup(
        sensord,
        webhook,
        "repeat_interval = 0\n[[alerts.inhibit]]\n"
        'source = ["severity=critical"]\ntarget = ["severity=warning"]\n'
        'equal = ["site", "device"]\n',
    )
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    async with running(sensord):
        mqtt_pub.publish(topic, b"95")  # hot and warm both fire; warm is inhibited
        await wait_for(lambda: _sent(webhook) == [("hot", "firing")])
        alerts = json.loads((await _cli(sensord, "alerts", "--json")).stdout)["alerts"]
        warm = next(a for a in alerts if a["rule"] == "warm")
        assert warm["state"] == "suppressed"
        assert warm["inhibited_by"] is not None
        mqtt_pub.publish(topic, b"70")  # hot resolves, warm still fires: now it notifies
        await wait_for(lambda: len(_sent(webhook)) >= 3)
        assert await sensord.stop() == 0
    assert _sent(webhook) == [("hot", "firing"), ("hot", "resolved"), ("warm", "firing")]


async def test_repeats_stop_once_acknowledged_and_the_resolution_is_still_sent(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    _setup(sensord, webhook, 'repeat_interval = "1s"\n')
    sensord.rules_yaml = RULES.split("  - name: warm", maxsplit=1)[0]
    topic = f"{sensord.topic_root}/plant-2/t-5/temperature"
    async with running(sensord):
        mqtt_pub.publish(topic, b"95")
        await wait_for(lambda: len(webhook.bodies) >= 3, timeout=30)  # first + 2 repeats
        firing = [a for b in webhook.bodies for a in b["alerts"]]
        assert len({a["fingerprint"] for a in firing}) == 1
        assert len({a["startsAt"] for a in firing}) == 1  # same episode
        fp = firing[0]["fingerprint"]
        ack = await _cli(sensord, "alerts", "ack", fp, "--comment", "on it")
        assert ack.returncode == 0, ack.stderr
        # a repeat published just before the ack may still be on its way: let it land
        count = -1
        for _ in range(20):
            if len(webhook.bodies) == count:
                break
            count = len(webhook.bodies)
            await asyncio.sleep(1.5)
        await asyncio.sleep(2.5)  # more than two repeat intervals
        assert len(webhook.bodies) == count
        listed = await _cli(sensord, "alerts")
        assert "acked" in listed.stdout
        mqtt_pub.publish(topic, b"20")
        await wait_for(lambda: webhook.alerts("resolved"))
        assert await sensord.stop() == 0


async def test_mutations_need_the_token(sensord: SensordProcess, webhook: WebhookSink) -> None:
    _setup(sensord, webhook)
    body = {"matchers": ["site=x"], "duration": "1h"}
    async with running(sensord), aiohttp.ClientSession() as http:
        url = sensord.base_url + "/api/v1/silences"
        async with http.post(url, json=body) as r:
            assert r.status == 401
        async with http.post(url, json=body, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 201
        async with http.post(
            url,
            json={"matchers": ["device=~[unclosed"], "duration": "1h"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 400
            assert "matcher" in (await r.json())["error"]
        async with http.get(url) as r:  # reads are open
            assert len((await r.json())["silences"]) == 1
        no_token = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "sensord",
                "silences",
                "add",
                "site=y",
                "--url",
                sensord.base_url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert no_token.returncode == 1
        assert "HTTP 401" in no_token.stderr
        assert await sensord.stop() == 0


async def test_each_channel_repeats_at_its_own_interval(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    """`repeat_interval` per channel: one firing alert is re-announced to `fast` every
    second and to `slow` every three; a repeat meant for `fast` only is skipped by `slow`."""
    slow = WebhookSink()
    await slow.start()
    try:
        _setup(sensord, webhook, "repeat_interval = 0\n")
        sensord.rules_yaml = RULES.split("  - name: warm", maxsplit=1)[0]
        sensord.channels = [
            {"name": "fast", "type": "webhook", "url": webhook.url, "repeat_interval": "1s"},
            {"name": "slow", "type": "webhook", "url": slow.url, "repeat_interval": "3s"},
        ]
        async with running(sensord):
            mqtt_pub.publish(f"{sensord.topic_root}/plant-3/t-1/temperature", b"95")
            await wait_for(lambda: len(slow.bodies) >= 3, timeout=30)  # first + 2 repeats
            metrics = await sensord.metrics()
            assert await sensord.stop() == 0
    finally:
        await slow.stop()
    fast_alerts = [a for b in webhook.bodies for a in b["alerts"]]
    slow_alerts = [a for b in slow.bodies for a in b["alerts"]]
    every = fast_alerts + slow_alerts
    assert {a["status"] for a in every} == {"firing"}
    assert len({a["fingerprint"] for a in every}) == 1
    assert len({a["startsAt"] for a in every}) == 1  # one episode, re-announced
    assert len(webhook.bodies) >= 6  # first + a repeat about every second for 6 s
    assert len(set(webhook.event_ids)) == len(webhook.event_ids)  # each repeat a new event
    gaps = [b - a for a, b in zip(slow.times, slow.times[1:], strict=False)]
    assert min(gaps) > 2.5, gaps  # every three seconds, not at fast's pace
    skipped = 'sensord_notifications_total{channel="slow",outcome="skipped"}'
    assert metrics.get(skipped, 0) >= 2  # fast-only repeats reached slow's queue, unsent
