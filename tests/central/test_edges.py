"""The issue's proof, whole processes: two edges (MQTT in, the readings stream out) of one
site, a rules process alerting on the site's average, killed midway and replaced by
another with a state file of its own: every transition reaches the webhook once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from sensord.testing.webhook import WebhookSink
from tests.central.support import Central, delivered, dump
from tests.support import MqttPublisher, SensordProcess

SITE_AVERAGE = """
rules:
  - name: site-warm
    match: {kind: temperature}
    aggregate: {fn: avg, window: 5s, by: [site, kind]}
    above: 30
    clear_below: 28
    severity: warning
"""

ROUNDS = 24


def edge(c: Central, name: str) -> SensordProcess:
    p = SensordProcess(workdir=c.tmp / name, prefix=c.prefix, topic_root=f"cr-{c.tag}-{name}")
    p.workdir.mkdir()
    p.role = "edge"
    p.rules_yaml = "rules: []\n"  # the edges judge nothing: the site is judged centrally
    p.extra_toml = '[telemetry]\nstream = true\nbatch = "50ms"\n'
    p.extra_env = {"SENSORD_MQTT__CLIENT_ID": f"{c.prefix}-{name}"}
    return p


async def test_site_average_over_two_edges_survives_a_rules_process_kill(
    tmp_path: Path,
) -> None:
    """Edge A's three sensors read 25, edge B's three swing 40 / 30 every round: the site
    average swings 32.5 / 27.5 across the rule's 30 / 28, one transition per round (each
    round's readings share a time 10 s after the last's, so a 5 s window holds one round)."""
    async with (
        WebhookSink() as hook,
        Central(tmp_path, hook, rules_yaml=SITE_AVERAGE).running() as c,
    ):
        edges = [edge(c, "edge-a"), edge(c, "edge-b")]
        pub = MqttPublisher()
        try:
            for e in edges:
                e.start()
            for e in edges:
                await e.wait_ready()
            first = c.start_rules("rules-1", state="one.db")
            await c.wait_owned(first, 1)
            t0 = time.time() - ROUNDS * 10 - 30  # in the past, not stale (5 min)
            second = None
            for r in range(ROUNDS):
                ts = datetime.fromtimestamp(t0 + r * 10, tz=UTC).isoformat()
                swing = 40 if r % 2 == 0 else 30
                for i in range(3):
                    for e, value in ((edges[0], 25), (edges[1], swing)):
                        topic = f"{e.topic_root}/plant-1/t-{e.workdir.name}-{i}/temperature"
                        payload = f'{{"value": {value}, "ts": "{ts}"}}'
                        await asyncio.to_thread(pub.publish, topic, payload)
                await asyncio.sleep(0.15)
                if r == ROUNDS // 2:
                    assert first.proc is not None
                    first.proc.kill()
                    first.proc.wait()
                    second = c.start_rules("rules-2", state="two.db")
            assert second is not None
            await c.wait_owned(second, 1)
            await c.settled(ROUNDS)
        finally:
            pub.close()
            for e in edges:
                if e.proc is not None and e.proc.poll() is None:
                    e.proc.kill()
                    e.proc.wait()
        got = delivered(hook)
        assert sum(got.values()) == ROUNDS, dump(got)
        assert max(got.values()) == 1, dump(got)  # none twice
        statuses = sorted(k[1] for k in got)
        assert statuses.count("firing") == statuses.count("resolved") == ROUNDS // 2
        assert (await second.metrics())["sensord_central_takeovers_total"] == 1
