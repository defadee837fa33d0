"""Central rules tests: SenML packs onto the readings streams (as edges publish them), a
notify worker with a webhook, rules processes started and killed, and the transitions the
pure engine expects from the same readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import yaml

from sensord.alerts.lifecycle import build_event
from sensord.events import Reading
from sensord.rules import Rule, RuleEngine
from sensord.telemetry.partition import partition_of_labels, stream_names
from sensord.telemetry.senml import CONTENT_TYPE, PackEncoder
from sensord.testing.webhook import WebhookSink
from tests.support import AMQP_URL, SensordProcess, delete_amqp, uid

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 50
    clear_below: 45
    severity: critical
"""


@dataclass
class Pack:
    """One stream message: an edge's batch."""

    readings: list[Reading]
    batched_at: float
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def flapping_packs(
    sites: Sequence[str], devices: int, rounds: int, *, t0: float = 1.8e9
) -> list[Pack]:
    """`rounds` packs, each one reading per sensor, values swinging across the threshold
    every round (60 / 40): every reading after the first round is a transition."""
    packs = []
    for r in range(rounds):
        t = t0 + r
        value = 60.0 if r % 2 == 0 else 40.0
        packs.append(
            Pack(
                [
                    Reading.trusted(site, f"t-{d}", "temperature", value, t, {}, "Cel")
                    for site in sites
                    for d in range(devices)
                ],
                batched_at=t + 0.05,
            )
        )
    return packs


def expected_transitions(rules_yaml: str, packs: Sequence[Pack]) -> Counter[tuple[str, str, str]]:
    """What the pure engine decides from the packs, as (fingerprint, status, starts_at)."""
    engine = RuleEngine([Rule.model_validate(r) for r in yaml.safe_load(rules_yaml)["rules"]])
    out: Counter[tuple[str, str, str]] = Counter()
    for pack in packs:
        for r in pack.readings:
            for tr in engine.evaluate(r, pack.batched_at):
                if tr.status != "flapping":
                    e = build_event(tr)
                    out[(e.fingerprint, e.status, _iso(e.starts_at))] += 1
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def delivered(webhook: WebhookSink) -> Counter[tuple[str, str, str]]:
    """What reached the webhook, as (fingerprint, status, starts_at)."""
    out: Counter[tuple[str, str, str]] = Counter()
    for body in webhook.bodies:
        for a in body["alerts"]:
            start = datetime.fromisoformat(a["startsAt"].replace("Z", "+00:00"))
            out[(a["fingerprint"], a["status"], _iso(start))] += 1
    return out


async def publish_packs(
    prefix: str,
    packs: Sequence[Pack],
    *,
    partitions: int = 1,
    by: Sequence[str] = ("site",),
    copies: int = 1,
) -> None:
    """Publish each pack as edges do: split by partition, with the edge's headers;
    `copies` > 1 publishes each message again (a re-send after a lost confirm)."""
    encoder = PackEncoder()
    streams = stream_names(prefix, partitions)
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        for pack in packs:
            parts: dict[int, list[Reading]] = {}
            for r in pack.readings:
                labels = {**r.labels, "site": r.site, "device": r.device, "kind": r.kind}
                parts.setdefault(partition_of_labels(labels, by, partitions), []).append(r)
            for i, readings in sorted(parts.items()):
                message = aio_pika.Message(
                    encoder.encode(readings),
                    content_type=CONTENT_TYPE,
                    message_id=f"{pack.message_id}-{i}",
                    headers={
                        "sensord-readings": len(readings),
                        "sensord-partition": i,
                        "sensord-batched-at": repr(pack.batched_at),  # text, as edges send it
                    },
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                for _ in range(copies):
                    await ch.default_exchange.publish(message, routing_key=streams[i])


async def declare_streams(prefix: str, partitions: int) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        for name in stream_names(prefix, partitions):
            await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})


def central_queues(prefix: str, partitions: int) -> list[str]:
    names = stream_names(prefix, partitions)
    names += [f"{prefix}.rules.checkpoint.{i}" for i in range(partitions)]
    names.append(f"{prefix}.rules.members")
    return names


@dataclass
class Central:
    """One test's notify worker, its rules processes and its streams."""

    tmp: Path
    webhook: WebhookSink
    partitions: int = 1
    rules_yaml: str = RULES
    tag: str = field(default_factory=uid)
    notify: SensordProcess | None = None
    rules: list[SensordProcess] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"cr{self.tag}"

    def _proc(self, name: str, role: str, state: str | None = None) -> SensordProcess:
        work = self.tmp / name
        work.mkdir(exist_ok=True)
        p = SensordProcess(workdir=work, prefix=self.prefix, topic_root=f"cr-{self.tag}")
        p.role = role
        p.rules_yaml = self.rules_yaml
        p.channels = [
            {"name": "hook", "type": "webhook", "url": self.webhook.url, "send_resolved": True}
        ]
        p.extra_toml = (
            f"[telemetry]\npartitions = {self.partitions}\n\n"
            '[central]\nstart = "first"\ncheckpoint_interval = "0.3s"\nlock_retry = "0.3s"\n'
        )
        p.extra_env = {"SENSORD_MQTT__CLIENT_ID": f"{self.prefix}-{name}"}
        if state is not None:
            p.extra_env["SENSORD_STATE__PATH"] = str(self.tmp / state)
        return p

    def start_rules(self, name: str, *, state: str | None = None) -> SensordProcess:
        p = self._proc(name, "rules", state)
        self.rules.append(p)
        p.start()
        return p

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Central]:
        await declare_streams(self.prefix, self.partitions)
        self.notify = self._proc("notify", "notify")
        try:
            self.notify.start()
            await self.notify.wait_ready(30)
            yield self
        finally:
            for p in [self.notify, *self.rules]:
                if p is not None and p.proc is not None and p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait()
            await delete_amqp(
                self.prefix, self.notify.queues() + central_queues(self.prefix, self.partitions)
            )

    async def owned(self, p: SensordProcess) -> float:
        return (await p.metrics()).get("sensord_central_partitions_owned", 0.0)

    async def wait_owned(self, p: SensordProcess, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self.owned(p) == n:
                    return
            await asyncio.sleep(0.1)
        tail = p.stderr()[-2000:]
        raise AssertionError(f"{p.workdir.name} does not own {n} partition(s): {tail}")

    async def settled(self, expected: int, timeout: float = 30.0) -> None:
        """Until the webhook has `expected` alerts, then a moment for late duplicates."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(delivered(self.webhook).values()) >= expected:
                await asyncio.sleep(1.5)
                return
            await asyncio.sleep(0.1)
        got = sum(delivered(self.webhook).values())
        raise AssertionError(
            f"{got}/{expected} alerts at the webhook: "
            + " | ".join(p.stderr()[-1500:] for p in self.rules)
        )


def dump(counter: Counter[Any]) -> str:
    return json.dumps(sorted((list(k), v) for k, v in counter.items()))[:2000]
