"""The notify fleet (sensord/notify/fleet.py): workers asking each other, on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.notify import fleet as fleet_mod
from sensord.notify.fleet import Fleet
from tests.support import AMQP_URL, uid, wait_for

pytestmark = pytest.mark.e2e


class Worker:
    def __init__(self, prefix: str, worker_id: str, seen: Callable[[str, str], bool] | None = None):
        self.fleet = Fleet(AmqpSettings(prefix=prefix), worker_id=worker_id, seen=seen)
        self.conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self.conn = await aio_pika.connect_robust(AMQP_URL)
        await self.fleet.start(self.conn)

    async def stop(self, *, bye: bool = True) -> None:
        if bye:
            await self.fleet.stop()
        elif self.fleet._beat is not None:  # a worker that vanishes: no `bye`
            self.fleet._beat.cancel()
        if self.conn is not None:
            await self.conn.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Worker, Worker]]:
    """Two workers of one fleet that know each other ("a…" has the lower id)."""
    prefix = f"t{uid()}"
    a, b = Worker(prefix, "a" + uid()), Worker(prefix, "b" + uid())
    await a.start()
    await b.start()
    try:
        await wait_for(lambda: a.fleet.live_peers() == {b.fleet.id}, timeout=5)
        await wait_for(lambda: b.fleet.live_peers() == {a.fleet.id}, timeout=5)
        await asyncio.sleep(max(0.0, b.fleet._ready_at - time.monotonic()))
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_an_event_another_worker_sent_is_a_duplicate(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    a.fleet.sent("hook", "e1")
    assert await b.fleet.sent_elsewhere("hook", "e1")
    assert not await b.fleet.sent_elsewhere("console", "e1")  # per channel
    started = time.monotonic()
    assert not await b.fleet.sent_elsewhere("hook", "unknown")
    assert time.monotonic() - started < fleet_mod.ASK_WAIT  # every worker answered "no"


async def test_the_state_file_record_counts_as_sent() -> None:
    prefix = f"t{uid()}"
    a = Worker(prefix, "a" + uid(), seen=lambda ch, e: (ch, e) == ("hook", "old"))
    b = Worker(prefix, "b" + uid())
    await a.start()
    await b.start()
    try:
        await wait_for(lambda: bool(b.fleet.live_peers()), timeout=5)
        assert await b.fleet.sent_elsewhere("hook", "old")
        assert not await b.fleet.sent_elsewhere("hook", "new")
    finally:
        await a.stop()
        await b.stop()


async def test_a_copy_waits_while_another_worker_sends_it(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    a.fleet.hold("hook", "e2", suspect=False)  # a plain copy in a's hands

    async def a_sends_later() -> None:
        await asyncio.sleep(0.6)
        a.fleet.sent("hook", "e2")
        a.fleet.release("hook", "e2", suspect=False)

    task = asyncio.create_task(a_sends_later())
    started = time.monotonic()
    assert await b.fleet.sent_elsewhere("hook", "e2")
    assert time.monotonic() - started >= 0.5
    await task


async def test_a_copy_another_worker_failed_to_send_is_sent(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    a.fleet.hold("hook", "e3", suspect=False)

    async def a_fails_later() -> None:
        await asyncio.sleep(0.4)
        a.fleet.release("hook", "e3", suspect=False)  # failed: to a retry tier, not sent

    task = asyncio.create_task(a_fails_later())
    assert not await b.fleet.sent_elsewhere("hook", "e3")
    await task


async def test_two_suspect_copies_at_once_one_worker_goes_first(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair  # a's id is lower: a goes first
    for w in pair:
        w.fleet.hold("hook", "e4", suspect=True)

    async def decide(w: Worker) -> bool:
        duplicate = await w.fleet.sent_elsewhere("hook", "e4")
        if not duplicate:  # this worker sends it: a third worker now hears "sending"
            assert w.fleet.status("hook", "e4") == "sending"
            await asyncio.sleep(0.1)
            w.fleet.sent("hook", "e4")
        w.fleet.release("hook", "e4", suspect=True)
        return duplicate

    a_dup, b_dup = await asyncio.wait_for(asyncio.gather(decide(a), decide(b)), 10)
    assert (a_dup, b_dup) == (False, True)


async def test_a_silent_worker_is_waited_for_until_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that vanished without `bye` (its node died, or it was killed) is waited
    for (it may answer "sent" once it reconnects) until PEER_TTL."""
    monkeypatch.setattr(fleet_mod, "PEER_TTL", 2.0)
    prefix = f"t{uid()}"
    a, b = Worker(prefix, "a" + uid()), Worker(prefix, "b" + uid())
    await a.start()
    await b.start()
    try:
        await wait_for(lambda: bool(b.fleet.live_peers()), timeout=5)
        await a.stop(bye=False)
        started = time.monotonic()
        assert not await b.fleet.sent_elsewhere("hook", "e5")
        waited = time.monotonic() - started
        assert 0.5 < waited < 4.0, waited
    finally:
        await b.stop()


async def test_a_worker_that_said_bye_is_not_waited_for(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    await a.fleet.stop()
    await wait_for(lambda: not b.fleet.live_peers(), timeout=5)
    started = time.monotonic()
    assert not await b.fleet.sent_elsewhere("hook", "e6")
    assert time.monotonic() - started < 0.1


async def test_the_fleet_leaves_nothing_on_rabbitmq() -> None:
    prefix = f"t{uid()}"
    a = Worker(prefix, "a" + uid())
    await a.start()
    queue = a.fleet.queue_name
    await a.stop()
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await ch.declare_queue(queue, passive=True)
        ch = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await ch.get_exchange(f"{prefix}.fleet", ensure=True)


async def test_a_start_stopped_before_its_queue_was_bound_leaves_no_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sensord stopped while its fleet started: the exchange was declared, the queue's
    bind never came. An auto-delete exchange that never had a binding is never deleted
    by RabbitMQ: stop deletes it, unless another worker's queue is bound to it."""
    prefix = f"t{uid()}"
    other = Worker(prefix, "b" + uid())
    await other.start()  # bound: its exchange must survive the first stop below
    cut = Worker(prefix, "a" + uid())

    async def never(*_args: object, **_kwargs: object) -> None:
        raise asyncio.CancelledError  # the stop came during the bind

    monkeypatch.setattr(aio_pika.RobustQueue, "bind", never)
    with pytest.raises(asyncio.CancelledError):
        await cut.start()
    monkeypatch.undo()
    await cut.stop()
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        await ch.get_exchange(f"{prefix}.fleet", ensure=True)  # still in use: kept
        await other.stop()
        lone = Worker(prefix, "c" + uid())
        monkeypatch.setattr(aio_pika.RobustQueue, "bind", never)
        with pytest.raises(asyncio.CancelledError):
            await lone.start()
        monkeypatch.undo()
        await lone.stop()
        ch = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await ch.get_exchange(f"{prefix}.fleet", ensure=True)


def test_workers_long_gone_are_forgotten() -> None:
    """Each start is a new worker id: ids not heard of for 10 x PEER_TTL are dropped."""
    fleet = Fleet(AmqpSettings(prefix="t"), worker_id="me")
    now = time.monotonic()
    fleet.peers = {"old": now - 11 * fleet_mod.PEER_TTL, "quiet": now - 2 * fleet_mod.PEER_TTL}
    fleet.peers["live"] = now
    fleet._count_peers()
    assert set(fleet.peers) == {"quiet", "live"}
    assert fleet.live_peers() == {"live"}


async def test_a_suspect_copy_a_worker_decided_to_send_answers_sending() -> None:
    """A lone worker (no peers) sends its suspect copy at once; while it does, any worker
    that joins hears "sending", not "waiting" (which a lower id could go past)."""
    fleet = Fleet(AmqpSettings(prefix="t"), worker_id="me")
    fleet.hold("hook", "e7", suspect=True)
    assert fleet.status("hook", "e7") == "waiting"
    assert not await fleet.sent_elsewhere("hook", "e7")
    assert fleet.status("hook", "e7") == "sending"
    fleet.release("hook", "e7", suspect=True)
    assert fleet.status("hook", "e7") == "no"
    assert not fleet._held
