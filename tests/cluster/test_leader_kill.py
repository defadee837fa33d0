"""The proof on a real 3-node cluster: SIGKILL the node leading the notify queue under load.

One edge (`--role edge`) and two notify workers (`--role notify`) on the cluster, a webhook
sink, a steady stream of readings that makes 600 alert transitions; the node leading
`<prefix>.notify.hook` is SIGKILLed midway. The edge and one worker are made to be
connected to that very node (the other nodes sit behind TCP proxies that only open once
they are up), so that the kill takes the queue's leader AND their connections: they must
move to another node. Every transition reaches the webhook exactly once, the outbox
empties, the DLQ stays empty: with the workers sharing a state file (one host) and with a
state file each (two hosts: only the fleet, notify/fleet.py, tells them apart). ~70 s on
2 cores per case (~25 s of which form the cluster, once).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from sensord.testing.rabbitmq import RabbitCluster
from tests.cluster.flow import Flow
from tests.support import TcpProxy, WebhookSink


@pytest.mark.e2e
@pytest.mark.cluster  # 60-70 s on 2 cores: `make test-cluster` (the suite stays ~10 min)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("hosts", ["one host", "two hosts"])
async def test_leader_kill_every_transition_once(
    tmp_path: Path, cluster: RabbitCluster, webhook: WebhookSink, hosts: str
) -> None:
    flow = Flow(tmp_path, cluster, webhook, edges=1, notifiers=2, sensors=50)
    flow.shared_state = hosts == "one host"
    rounds = 12
    await flow.declare_on(1)  # node 1 leads the notify queue
    leader = cluster.leader(flow.queue)
    assert leader.index == 1
    others = [n for n in cluster.nodes if n is not leader]
    proxies = [TcpProxy(n.amqp_port) for n in others]  # closed until the processes run
    pinned = [leader.url] + [
        n.url.replace(f":{n.amqp_port}/", f":{p.port}/")
        for n, p in zip(others, proxies, strict=True)
    ]
    flow.edge_urls = [pinned]
    flow.notify_urls = [pinned]  # worker 0; worker 1 on any node
    killed_at = 0.0
    try:
        async with flow.running():
            before = await flow.nodes()
            assert before[0]["publish"] == f"127.0.0.1:{leader.amqp_port}", before
            assert before[1]["consume"] == f"127.0.0.1:{leader.amqp_port}", before
            for p in proxies:
                await p.up()

            async def on_round(r: int) -> None:
                nonlocal killed_at
                if r == rounds // 2:
                    cluster.kill(leader)
                    killed_at = time.monotonic()

            sent = await flow.stream(rounds, 0.5, on_round)
            await flow.settled(sent)
            report = flow.report()
            split = await flow.split()
            failovers = await flow.failovers()
            after = await flow.nodes()
            dead = await flow.dead_letters()
    finally:
        for p in proxies:
            await p.down()
    print(json.dumps({"sent": sent, **report, "split": split, "failovers": failovers,
                      "nodes_before": before, "nodes_after": after}), file=sys.stderr)  # fmt: skip
    assert killed_at > 0
    assert sent == 600
    assert report["notifications"] == sent, report
    assert report["unique_events"] == sent, report
    assert report["duplicate_transitions"] == 0, report
    assert dead == 0
    # each notification counted by the worker that sent it, also when its ack died with
    # the node (a channel's close no longer cancels a send half-way: notify/consumer.py)
    assert sum(split) == sent, split
    assert all(n > 0 for n in split), split  # both workers worked
    # the pinned edge and worker moved off the dead node, and counted it
    assert failovers[0] >= 1, failovers
    assert failovers[1] >= 1, failovers
    gone = f"127.0.0.1:{leader.amqp_port}"
    assert after[0]["publish"] not in (None, gone), after
    assert after[1]["consume"] not in (None, gone), after
    # (the edge's quarantine is a channel on the same publishing connection, and a quorum
    # queue: it moved with it; docs/scale-out.md, "Failure modes")
