"""`sensord dlq list|replay|purge` against dead letters made by a real notify process."""

from __future__ import annotations

import json

import pytest

from tests.support import (
    SensordProcess,
    WebhookSink,
    make_event,
    peek_queue,
    publish_events,
    queue_depth,
    run_cli,
    running,
)

pytestmark = pytest.mark.e2e


async def test_replay_one_by_id_and_purge_with_confirmation(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    webhook.statuses = [400, 400]
    sensord.role = "notify"
    sensord.channels = [
        {"name": "hook", "type": "webhook", "url": webhook.url, "retry": {"max_attempts": 2}}
    ]
    first, second = make_event(device="t-1"), make_event(device="t-2")
    work = f"{sensord.prefix}.notify.hook"
    dead = f"{work}.dead"
    config = str(sensord.config_path)
    async with running(sensord):
        await publish_events(sensord.prefix, [first, second])
        await sensord.wait_metric('sensord_notifications_total{channel="hook",outcome="dead"}', 2)
        assert await sensord.stop() == 0  # no consumer: replayed messages stay queued

        listing = run_cli("dlq", "list", "-c", config, "--channel", "hook")
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()[:-1]
        assert header.split() == ["WHEN", "CHANNEL", "ALERT", "STATUS", "REASON", "ATTEMPTS", "ID"]
        assert len(rows) == 2
        assert all("HTTP 400" in row and " firing " in row for row in rows)
        assert await queue_depth(dead) == 2  # listing leaves them there

        replay = run_cli("dlq", "replay", "-c", config, "--id", second["event_id"])
        assert replay.returncode == 0, replay.stderr
        assert f"replayed {second['event_id']} to {work}" in replay.stdout
        (back,) = await peek_queue(work)
        assert json.loads(back.body)["event_id"] == second["event_id"]
        assert "x-sensord-attempts" not in (back.headers or {})  # attempts reset
        assert await queue_depth(dead) == 1

        missing = run_cli("dlq", "replay", "-c", config, "--id", "no-such-id")
        assert missing.returncode == 1
        assert "no dead letter with id 'no-such-id'" in missing.stderr
        unknown = run_cli("dlq", "list", "-c", config, "--channel", "nope")
        assert unknown.returncode == 1
        assert "no channel named 'nope'" in unknown.stderr

        refused = run_cli("dlq", "purge", "-c", config, "--channel", "hook")
        assert refused.returncode == 1
        assert "--yes" in refused.stderr
        assert await queue_depth(dead) == 1
        purged = run_cli("dlq", "purge", "-c", config, "--channel", "hook", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert "purged 1 dead letter(s)" in purged.stdout
        assert await queue_depth(dead) == 0
