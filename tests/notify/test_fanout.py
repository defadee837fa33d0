"""Fan-out to several channels, match filters, and competing notify processes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.support import (
    MqttRecorder,
    SensordProcess,
    WebhookSink,
    make_event,
    publish_events,
    queue_depth,
    running,
    uid,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sinks() -> AsyncIterator[list[WebhookSink]]:
    started = [WebhookSink() for _ in range(4)]
    for s in started:
        await s.start()
    yield started
    for s in started:
        await s.stop()


async def test_one_alert_reaches_each_matching_channel_once(  # noqa: PLR0915 - one scenario, six channels
    sensord: SensordProcess, sinks: list[WebhookSink], tmp_path: Path
) -> None:
    hook, warn_only, plant_only, slack = sinks
    root = f"alerts-{uid()}"
    (tmp_path / "hook.secret").write_text("s3cret\n")
    sensord.role = "notify"
    sensord.channels = [
        {"name": "hook", "type": "webhook", "url": hook.url, "hmac_secret_file": "hook.secret"},
        {"name": "file", "type": "file", "path": "out/notifications.jsonl", "fsync": True},
        {
            "name": "mqtt",
            "type": "mqtt",
            "url": "mqtt://127.0.0.1:1883",
            "topic_template": root + "/{site}/{device}",
            "retain": True,
        },
        {"name": "warn", "type": "webhook", "url": warn_only.url, "severities": ["warning"]},
        {
            "name": "plants",
            "type": "webhook",
            "url": plant_only.url,
            "match": {"site": "plant-?", "kind": "temp*"},
        },
        {
            "name": "slack",
            "type": "slack",
            "url": slack.url,
            "send_resolved": False,
            "template": "{STATUS} {rule} {site}/{device} value={value:.1f}",
        },
    ]
    firing = make_event(site="plant-1", device="t-7", value=81.25)
    elsewhere = make_event(site="depot-2", device="t-1", severity="critical")
    recorder = MqttRecorder(f"{root}/#")
    try:
        async with running(sensord):
            await wait_for(lambda: recorder.subscribed)
            await publish_events(sensord.prefix, [firing])
            await wait_for(lambda: hook.bodies and plant_only.bodies and slack.bodies)
            await wait_for(lambda: recorder.messages)
            await publish_events(sensord.prefix, [elsewhere])
            await wait_for(lambda: len(hook.bodies) == 2 and len(recorder.messages) == 2)
            await sensord.wait_metric(
                'sensord_notifications_total{channel="plants",outcome="skipped"}', 1
            )
            # a new subscriber gets the retained alert of plant-1/t-7
            late = MqttRecorder(f"{root}/plant-1/#")
            await wait_for(lambda: late.messages)
            late.close()
            resolved = make_event(
                site="plant-1", device="t-7", status="resolved", fingerprint=firing["fingerprint"]
            )
            await publish_events(sensord.prefix, [resolved])
            await wait_for(lambda: len(recorder.messages) == 4)  # resolution + clearing
            later = MqttRecorder(f"{root}/plant-1/#")
            await wait_for(lambda: later.subscribed)
            await asyncio.sleep(0.5)
            later_messages = list(later.messages)
            later.close()
            await wait_for(lambda: len(hook.bodies) == 3)
            metrics = await sensord.wait_metric(
                'sensord_notifications_total{channel="slack",outcome="skipped"}', 1
            )
            assert await sensord.stop() == 0
    finally:
        recorder.close()

    # webhook: each once, signed with HMAC-SHA256 of the exact body
    assert [b["alerts"][0]["labels"]["site"] for b in hook.bodies] == [
        "plant-1",
        "depot-2",
        "plant-1",
    ]
    expected = "sha256=" + hmac.new(b"s3cret", hook.raw[0], hashlib.sha256).hexdigest()
    assert hook.headers[0]["X-Sensord-Signature"] == expected
    # file: one JSON line per notification
    lines = (tmp_path / "out" / "notifications.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event_id"] for r in records] == [
        firing["event_id"],
        elsewhere["event_id"],
        resolved["event_id"],
    ]
    assert records[0]["channel"] == "file"
    assert records[0]["labels"]["device"] == "t-7"
    # mqtt: retained per fingerprint, cleared with an empty retained message on resolve
    topics = [t for t, _, _ in recorder.messages]
    assert topics[0] == f"{root}/plant-1/t-7/{firing['fingerprint']}"
    assert json.loads(recorder.messages[0][1])["event_id"] == firing["event_id"]
    assert json.loads(recorder.messages[2][1])["status"] == "resolved"
    assert recorder.messages[3][1] == b""
    assert later_messages == []  # nothing retained any more
    # a warning-only channel does not get critical alerts
    assert warn_only.requests == 0
    # match: plant-? / temp* took plant-1 and skipped depot-2
    assert [b["alerts"][0]["labels"]["site"] for b in plant_only.bodies] == [
        "plant-1",
        "plant-1",
    ]
    assert metrics['sensord_notifications_total{channel="plants",outcome="skipped"}'] == 1
    # slack: readable text from the template; the resolution skipped (send_resolved = false)
    assert slack.bodies[0] == {"text": "FIRING critical-temperature plant-1/t-7 value=81.2"}
    assert [b["text"].split()[1:3] for b in slack.bodies] == [
        ["critical-temperature", "plant-1/t-7"],
        ["critical-temperature", "depot-2/t-1"],
    ]
    for channel in ("hook", "file", "mqtt"):
        assert metrics[f'sensord_notifications_total{{channel="{channel}",outcome="sent"}}'] == 3


async def test_competing_notify_processes_deliver_each_alert_exactly_once(
    tmp_path: Path, webhook: WebhookSink
) -> None:
    tag = uid()
    channels: list[dict[str, object]] = [
        {"name": "hook", "type": "webhook", "url": webhook.url, "prefetch": 64}
    ]
    procs: list[SensordProcess] = []
    for role in ("notify", "notify", "edge"):
        workdir = tmp_path / f"{role}-{len(procs)}"
        workdir.mkdir()
        proc = SensordProcess(
            workdir=workdir, prefix=f"t{tag}", topic_root=f"test-{tag}", role=role
        )
        proc.channels = channels
        proc.rules_yaml = "rules: []\n"
        procs.append(proc)
    events = [make_event(device=f"t-{i % 50}") for i in range(1000)]
    async with AsyncExitStack() as stack:
        for proc in procs:
            await stack.enter_async_context(running(proc))
        await publish_events(procs[0].prefix, events)
        await wait_for(lambda: len(webhook.bodies) >= 1000, timeout=60)
        await asyncio.sleep(1.0)  # a duplicate would arrive now
        per_process = []
        for proc in procs[:2]:
            metrics = await proc.metrics()
            per_process.append(
                metrics.get('sensord_notifications_total{channel="hook",outcome="sent"}', 0)
            )
        for proc in procs:
            assert await proc.stop() == 0
        # every delivery was acknowledged (in batches): nothing went back to the queue
        assert await queue_depth(f"{procs[0].prefix}.notify.hook") == 0
    delivered = Counter(b["alerts"][0]["fingerprint"] for b in webhook.bodies)
    assert len(webhook.bodies) == 1000
    assert set(delivered) == {e["fingerprint"] for e in events}
    assert max(delivered.values()) == 1
    assert sum(per_process) == 1000
    assert min(per_process) > 0, per_process  # both processes took a share
