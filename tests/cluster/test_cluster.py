"""The longer proofs on the local cluster (`make test-cluster`, marker `cluster`): a rolling
restart, an edge cut off from its node for 60 s, three edges and three notify workers.
Each reconciles what reached the webhook: every transition exactly once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from sensord.testing.rabbitmq import RabbitCluster
from tests.cluster.flow import Flow
from tests.support import TcpProxy, WebhookSink


def _exactly_once(flow: Flow, sent: int) -> dict[str, object]:
    report = flow.report()
    assert report["notifications"] == sent, report
    assert report["unique_events"] == sent, report
    assert report["duplicate_transitions"] == 0, report
    return report


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_rolling_restart(
    tmp_path: Path, cluster: RabbitCluster, webhook: WebhookSink
) -> None:
    flow = Flow(tmp_path, cluster, webhook, edges=1, notifiers=2, sensors=30)
    async with flow.running():

        async def roll() -> None:
            await asyncio.sleep(3)
            for node in cluster.nodes:
                await asyncio.to_thread(cluster.stop_node, node)
                await asyncio.to_thread(cluster.restart, node)
                await asyncio.to_thread(cluster.wait_clustered, 60)

        roller = asyncio.create_task(roll())
        sent = await flow.stream(rounds=80, interval=0.5)
        await roller
        await flow.settled(sent, timeout=120)
        report = _exactly_once(flow, sent)
        assert await flow.dead_letters() == 0
        split = await flow.split()
    print(json.dumps({"test": "rolling", "sent": sent, **report, "split": split}), file=sys.stderr)


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_edge_cut_off_from_its_node_for_60s(
    tmp_path: Path, cluster: RabbitCluster, webhook: WebhookSink
) -> None:
    flow = Flow(tmp_path, cluster, webhook, edges=1, notifiers=1, sensors=20)
    own, *others = cluster.nodes
    link = TcpProxy(own.amqp_port)  # the edge's link to its node
    late = [TcpProxy(n.amqp_port) for n in others]  # open once the edge is on its node
    await link.up()
    flow.edge_urls = [
        [own.url.replace(f":{own.amqp_port}/", f":{link.port}/")]
        + [
            n.url.replace(f":{n.amqp_port}/", f":{p.port}/")
            for n, p in zip(others, late, strict=True)
        ]
    ]
    try:
        async with flow.running():
            for p in late:
                await p.up()

            async def cut() -> None:
                await asyncio.sleep(3)
                await link.down()
                await asyncio.sleep(60)
                await link.up()

            cutter = asyncio.create_task(cut())
            sent = await flow.stream(rounds=140, interval=0.5)  # 70 s: the whole cut
            await cutter
            await flow.settled(sent, timeout=120)
            report = _exactly_once(flow, sent)
            failovers = await flow.failovers()
            assert failovers[0] >= 1, failovers  # the edge moved to another node
    finally:
        for p in [link, *late]:
            await p.down()
    print(
        json.dumps({"test": "cut", "sent": sent, **report, "failovers": failovers}), file=sys.stderr
    )


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_three_edges_three_notifiers(
    tmp_path: Path, cluster: RabbitCluster, webhook: WebhookSink
) -> None:
    """Three hosts: each edge its own sensors and state, each notify worker its own state
    file (nothing shared but the cluster: the fleet, notify/fleet.py, tells copies apart)."""
    flow = Flow(tmp_path, cluster, webhook, edges=3, notifiers=3, sensors=30)
    flow.shared_state = False
    async with flow.running():
        leader = cluster.leader(flow.queue)

        async def on_round(r: int) -> None:
            if r == 5:
                await asyncio.to_thread(cluster.kill, leader)

        sent = await flow.stream(rounds=10, interval=1.0, on_round=on_round)
        await flow.settled(sent, timeout=120)
        report = _exactly_once(flow, sent)
        split = await flow.split()
        assert sum(split) == sent, split  # each counted by the worker that sent it
        assert all(n > 0 for n in split), split
        assert await flow.dead_letters() == 0
    print(json.dumps({"test": "3x3", "sent": sent, **report, "split": split}), file=sys.stderr)
