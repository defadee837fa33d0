"""Edges and notify workers of one test on the local cluster, fed by a steady stream of
readings, and the reconciliation of what reached the webhook."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import declare_topology
from sensord.notify.registry import ChannelSettings
from sensord.testing.rabbitmq import RabbitCluster
from tests.support import MqttPublisher, SensordProcess, WebhookSink, uid

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 50
    severity: critical
"""


@dataclass
class Flow:
    """`edges` edge processes (own sensors, own state) and `notifiers` notify workers."""

    tmp: Path
    cluster: RabbitCluster
    webhook: WebhookSink
    edges: int = 1
    notifiers: int = 2
    sensors: int = 50  # per edge
    tag: str = field(default_factory=uid)
    procs: list[SensordProcess] = field(default_factory=list)
    urls: list[str] | None = None  # default: the cluster's nodes
    edge_urls: list[list[str]] = field(default_factory=list)  # per edge, when set
    notify_urls: list[list[str]] = field(default_factory=list)  # per worker, when set
    shared_state: bool = True  # the notify workers share one state file

    @property
    def prefix(self) -> str:
        return f"c{self.tag}"

    @property
    def queue(self) -> str:
        return f"{self.prefix}.notify.hook"

    def _proc(self, name: str, role: str, urls: list[str]) -> SensordProcess:
        work = self.tmp / name
        work.mkdir()
        # each edge its own sensors: its own topic root
        p = SensordProcess(workdir=work, prefix=self.prefix, topic_root=f"cl-{self.tag}-{name}")
        p.role = role
        p.rules_yaml = RULES
        p.channels = [
            {"name": "hook", "type": "webhook", "url": self.webhook.url, "send_resolved": True}
        ]
        p.extra_env = {
            "SENSORD_AMQP__URL": ",".join(urls),
            "SENSORD_MQTT__CLIENT_ID": f"{self.prefix}-{name}",
        }
        if role == "notify" and self.shared_state:
            # notify workers of one host share their handled event ids (docs/scale-out.md)
            p.extra_env["SENSORD_STATE__PATH"] = str(self.tmp / "notify-state.db")
        return p

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Flow]:
        urls = self.urls or self.cluster.urls
        for i in range(self.edges):
            eu = self.edge_urls[i] if self.edge_urls else urls
            self.procs.append(self._proc(f"edge{i}", "edge", eu))
        for i in range(self.notifiers):
            nu = self.notify_urls[i] if i < len(self.notify_urls) else urls
            self.procs.append(self._proc(f"notify{i}", "notify", nu))
        try:
            for p in self.procs:
                p.start()
            for p in self.procs:
                await p.wait_ready(60)
            deadline = time.monotonic() + 20
            while not all(all(n.values()) for n in await self.nodes()):  # every connection up
                assert time.monotonic() < deadline, await self.nodes()
                await asyncio.sleep(0.1)
            yield self
        finally:
            for p in self.procs:
                if p.proc is not None and p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait()

    @property
    def edge_procs(self) -> list[SensordProcess]:
        return [p for p in self.procs if p.role == "edge"]

    @property
    def notify_procs(self) -> list[SensordProcess]:
        return [p for p in self.procs if p.role == "notify"]

    async def stream(self, rounds: int, interval: float, on_round: Any = None) -> int:
        """`rounds` rounds, each one reading per sensor of every edge, flipping each sensor
        above and below the threshold: every reading is a transition. Returns how many."""
        pub = MqttPublisher()
        sent = 0
        try:
            for r in range(rounds):
                began = time.monotonic()
                value = 60 if r % 2 == 0 else 40
                for e in range(self.edges):
                    for s in range(self.sensors):
                        topic = f"cl-{self.tag}-edge{e}/site{e}/t-{s}/temperature"
                        await asyncio.to_thread(pub.publish, topic, str(value))
                        sent += 1
                if on_round is not None:
                    await on_round(r)
                await asyncio.sleep(max(interval - (time.monotonic() - began), 0))
        finally:
            pub.close()
        return sent

    async def settled(self, expected: int, timeout: float = 90.0) -> None:
        """Until the webhook got `expected` notifications and every outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = 0.0
            for p in self.edge_procs:
                pending += (await p.metrics()).get("sensord_outbox_pending", 0.0)
            if len(self.webhook.event_ids) >= expected and pending == 0:
                await asyncio.sleep(1.5)  # a late duplicate would arrive meanwhile
                return
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{len(self.webhook.event_ids)}/{expected} notifications, outbox {pending}: "
            + " | ".join(p.stderr()[-1500:] for p in self.procs)
        )

    def report(self) -> dict[str, Any]:
        ids = Counter(self.webhook.event_ids)
        keys = Counter(
            (a["fingerprint"], a["status"], a["startsAt"], a.get("endsAt"))
            for b in self.webhook.bodies
            for a in b["alerts"]
        )
        return {
            "notifications": len(self.webhook.event_ids),
            "unique_events": len(ids),
            "duplicates": sum(n - 1 for n in ids.values() if n > 1),
            "duplicate_transitions": sum(n - 1 for n in keys.values() if n > 1),
        }

    async def split(self) -> list[float]:
        """Notifications sent per notify worker."""
        out = []
        for p in self.notify_procs:
            m = await p.metrics()
            out.append(m.get('sensord_notifications_total{channel="hook",outcome="sent"}', 0.0))
        return out

    async def declare_on(self, node: int) -> None:
        """Declare the topology through one node: it leads the new quorum queues."""
        n = self.cluster.node(node)
        settings = AmqpSettings(url=self.cluster.urls, prefix=self.prefix)  # type: ignore[arg-type]
        # the queues depend on the name, severities and retry tiers, not the type
        hook = ChannelSettings.model_validate({"name": "hook", "type": "console"})
        conn = await aio_pika.connect(n.url)
        async with conn:
            await declare_topology(await conn.channel(), settings, [hook])

    async def nodes(self) -> list[dict[str, str | None]]:
        """Each process's RabbitMQ nodes per connection, from /readyz."""
        return [json.loads((await p.get("/readyz"))[1])["amqp_nodes"] for p in self.procs]

    async def failovers(self) -> list[float]:
        """sensord_amqp_failovers_total of each process, all connections summed."""
        out = []
        for p in self.procs:
            m = await p.metrics()
            out.append(sum(v for k, v in m.items() if k.startswith("sensord_amqp_failovers_total")))
        return out

    async def dead_letters(self) -> int:
        """Messages in the channel's DLQ, asked on a running node."""
        node = next(n for n in self.cluster.nodes if n.pid is not None)
        conn = await aio_pika.connect(node.url)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(f"{self.queue}.dead", passive=True)
            return int(q.declaration_result.message_count or 0)
