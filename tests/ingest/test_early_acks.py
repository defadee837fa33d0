"""Early PUBACKs (sensord/ingest/client.py EARLY_ACKS), over a private Mosquitto at its stock
window of 20 in-flight messages.

While a read batch has left nothing to commit (calm readings), its PUBACKs leave every
EARLY_ACKS messages, so the broker refills its window while the rest of the batch is
processed; from the first reading that leaves something to commit (a transition), the
batch's PUBACKs wait for the batch's commit. Each test queues a backlog for a persistent
session, so that it arrives in full windows, and records every PUBACK send: how many, and
whether it left inside a batch (before the batch's commit) or after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sensord.events import Reading
from sensord.ingest.client import EARLY_ACKS, MqttBridge
from sensord.ingest.settings import MqttSettings
from sensord.ops.metrics import Metrics
from sensord.rules import AlertTransition, RuleEngine
from tests.ingest.test_bridge import HOT, topic
from tests.support import MqttPublisher, PrivateMosquitto, uid, wait_for

BACKLOG = 300


@dataclass
class Recorder:
    """A stand-in for the alert pipeline (rules, one commit per batch) that records what
    the bridge asks of it and each PUBACK send."""

    engine: RuleEngine = field(default_factory=lambda: RuleEngine([HOT]))
    pending: list[AlertTransition] = field(default_factory=list)
    committed: list[AlertTransition] = field(default_factory=list)
    readings: int = 0
    in_batch: bool = False
    # (PUBACKs sent, inside a batch before its commit?, transitions not yet committed)
    sends: list[tuple[int, bool, int]] = field(default_factory=list)

    def sink(self, reading: Reading, now: float, key: object) -> None:
        self.in_batch = True
        self.readings += 1
        self.pending += self.engine.evaluate(reading, now)

    def clean(self) -> bool:
        return not self.pending

    def end_batch(self) -> None:
        self.committed += self.pending
        self.pending = []
        self.in_batch = False


@contextlib.asynccontextmanager
async def recorded(port: int, client_id: str) -> AsyncIterator[Recorder]:
    settings = MqttSettings.model_validate(
        {
            "url": f"mqtt://127.0.0.1:{port}",
            "client_id": client_id,
            "topics": ["ingest/#"],
            "topic_template": "ingest/{site}/{device}/{kind}",
            "qos": 1,
        }
    )
    rec = Recorder()
    bridge = MqttBridge(settings, rec.sink, Metrics(), on_batch_end=rec.end_batch, clean=rec.clean)
    client = bridge.client
    flush = client.flush_acks

    def recording_flush() -> None:
        n = client.queued_acks
        if n:
            rec.sends.append((n, rec.in_batch, len(rec.pending)))
        flush()

    client.flush_acks = recording_flush  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        yield rec
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def backlog(broker: PrivateMosquitto, values: list[float]) -> str:
    """A persistent session subscribed and offline, with `values` queued for it."""
    client_id = f"test-early-{uid()}"
    async with recorded(broker.port, client_id):
        pass
    pub = MqttPublisher(broker.port)
    ts = time.time() - 0.001 * len(values)  # recent (stale_after), each newer than the last
    try:
        for i, value in enumerate(values):
            pub.publish(topic("t-1"), json.dumps({"value": value, "ts": ts + 0.001 * i}))
    finally:
        pub.close()
    return client_id


async def test_calm_readings_are_acknowledged_during_their_batch(
    broker: PrivateMosquitto,
) -> None:
    """No reading leaves anything to commit: PUBACKs leave in groups of EARLY_ACKS while
    the batch is read, and every reading is acknowledged (the next session gets none)."""
    client_id = await backlog(broker, [20.0 + i % 5 for i in range(BACKLOG)])
    async with recorded(broker.port, client_id) as rec:
        await wait_for(lambda: rec.readings == BACKLOG)
        await wait_for(lambda: sum(n for n, _, _ in rec.sends) == BACKLOG)
    early = [n for n, inside, _ in rec.sends if inside]
    assert early, "no PUBACK left before its batch ended"
    assert all(n >= EARLY_ACKS for n in early)
    assert sum(early) >= BACKLOG // 2  # most of them: windows of 20 arrive whole
    assert rec.committed == []
    async with recorded(broker.port, client_id) as again:
        await asyncio.sleep(0.5)
    assert again.readings == 0  # all acknowledged: nothing is redelivered


async def test_a_batch_with_a_transition_is_acknowledged_after_its_commit(
    broker: PrivateMosquitto,
) -> None:
    """Every reading fires or resolves: no PUBACK ever leaves while a transition of its
    batch is uncommitted; they all leave after the batch's commit."""
    values = [90.0 if i % 2 == 0 else 60.0 for i in range(BACKLOG)]
    client_id = await backlog(broker, values)
    async with recorded(broker.port, client_id) as rec:
        await wait_for(lambda: rec.readings == BACKLOG)
        await wait_for(lambda: sum(n for n, _, _ in rec.sends) == BACKLOG)
    assert len(rec.committed) == BACKLOG
    assert all(not inside and uncommitted == 0 for _, inside, uncommitted in rec.sends)
    assert max(n for n, _, _ in rec.sends) > 1  # batches, not one reading at a time


async def test_acks_before_the_first_transition_leave_early_the_rest_after_the_commit(
    broker: PrivateMosquitto,
) -> None:
    """Calm readings, then one that fires, then calm again, in one window: the PUBACKs of
    the calm prefix may leave early; none leaves between the firing and its commit."""
    values = ([20.0] * 15 + [90.0] + [85.0] * 4) * (BACKLOG // 20)  # fires once, then holds
    client_id = await backlog(broker, values)
    async with recorded(broker.port, client_id) as rec:
        await wait_for(lambda: rec.readings == BACKLOG)
        await wait_for(lambda: sum(n for n, _, _ in rec.sends) == BACKLOG)
    assert [t.status for t in rec.committed][:1] == ["firing"]
    assert all(uncommitted == 0 for _, _, uncommitted in rec.sends)
    assert any(inside for _, inside, _ in rec.sends)  # the calm prefixes went early
