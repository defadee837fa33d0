"""The notify workers of one `[amqp] prefix`, over RabbitMQ: who sent, or is sending, an event.

RabbitMQ delivers at least once, so a copy of an event can reach a second worker: an
edge publishes an event again when its confirm was lost in a node's death, and a message a
worker took but could not acknowledge (its node died) is delivered to another. Workers
sharing a state file see each other's record (notify/dedup.py); workers on other hosts
learn it here, from the workers themselves, before sending a *suspect* copy:

- every worker has an exclusive queue `<prefix>.fleet.<worker id>` bound to the fanout
  exchange `<prefix>.fleet` (both transient and auto-deleted), and says `hi` there every
  `HEARTBEAT` seconds (`bye` when it stops): each worker knows which others are alive;
- a copy is suspect when RabbitMQ marks it redelivered, when the edge marks it sent again
  (`x-sensord-resent`), or when it is a worker's own copy (a retry tier's, a held or a
  throttled one: `x-sensord-channel`). A first delivery, nearly every message, asks nothing;
- for a suspect copy the worker `ask`s the fleet; every other worker answers for that
  (channel, event id): `sent` (it notified: the copy is a duplicate), `sending` (it holds
  a plain copy, or a suspect one it decided to send: wait for it), `waiting` (it holds a
  suspect copy and is asking too: the lower worker id goes first), or `no`;
- the worker sends when every live worker answered and none sent or goes first; it asks
  again while one is sending, or is silent (a worker whose node died reconnects to the
  next one in about a second, and answers then); a worker silent for `PEER_TTL` is gone,
  and after `CLAIM_TTL` the copy is sent whatever the answers (its holder is stuck).

What this cannot see: a worker killed between its notification and its record of it
(the next copy is sent again), and a worker cut off from RabbitMQ for longer than
`PEER_TTL` that had sent the event. docs/scale-out.md, "Exactly once".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from sensord.amqp.headers import CHANNEL_HEADER, RESENT_HEADER
from sensord.amqp.settings import AmqpSettings

log = logging.getLogger("sensord.notify")

HEARTBEAT = 1.0  # seconds between a worker's `hi`
PEER_TTL = 15.0  # a worker not heard from this long is gone (killed, or cut off)
CLAIM_TTL = 15.0  # a suspect copy waits at most this long for the others
DISCOVERY = 0.25  # after start, before the first ask: the others answer `hi` at once
ASK_WAIT = 0.5  # seconds to wait for every live worker's answer to one ask
ASK_AGAIN = 0.2  # pause before asking again (a worker is sending, or silent)
RECENT = 600.0  # seconds a sent event is remembered in memory for the answers
RECENT_MAX = 100_000  # and at most this many

Key = tuple[str, str]  # (channel name, event id)


def is_suspect(message: AbstractIncomingMessage) -> bool:
    """A copy that may have been sent already (notify/fleet.py): redelivered by RabbitMQ,
    published again by the edge, or a worker's own copy (retry tier, held, throttled)."""
    if message.redelivered:
        return True
    headers = message.headers
    return bool(headers) and (RESENT_HEADER in headers or CHANNEL_HEADER in headers)


class Fleet:
    """One process's membership of the fleet: its answers and its asks."""

    def __init__(
        self,
        amqp: AmqpSettings,
        *,
        seen: Callable[[str, str], bool] | None = None,
        worker_id: str | None = None,
        on_peers: Callable[[int], None] | None = None,
    ) -> None:
        """`seen(channel, event_id)`: the state file's record (HandledEvents.seen), asked
        for events sent before this process started; `on_peers`: the number of live
        other workers, each time it changes (a gauge)."""
        self.id = worker_id or uuid.uuid4().hex[:16]
        self.exchange_name = f"{amqp.prefix}.fleet"
        self.queue_name = f"{self.exchange_name}.{self.id}"
        self._seen = seen
        self._on_peers = on_peers
        self.peers: dict[str, float] = {}  # worker id -> when last heard (monotonic)
        self._held: dict[Key, list[int]] = {}  # copies in hand: [plain, suspect]
        self._sent: OrderedDict[Key, float] = OrderedDict()
        self._asks: dict[str, tuple[dict[str, str], asyncio.Event, set[str]]] = {}
        self._ask_ids = itertools.count(1)
        self._channel: AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._connection: AbstractRobustConnection | None = None
        self._bound = False  # this worker's queue is bound to the exchange
        self._beat: asyncio.Task[None] | None = None
        self._ready_at = 0.0
        self._live_count = 0

    # ---- what this worker holds and sent (called by the channel consumers)

    def hold(self, channel: str, event_id: str, *, suspect: bool) -> None:
        counts = self._held.setdefault((channel, event_id), [0, 0])
        counts[1 if suspect else 0] += 1

    def release(self, channel: str, event_id: str, *, suspect: bool) -> None:
        key = (channel, event_id)
        counts = self._held.get(key)
        if counts is None:
            return
        # a suspect copy this worker decided to send counts as a plain one (`_go`)
        i = 1 if suspect and counts[1] > 0 else 0
        counts[i] -= 1
        if counts[0] <= 0 and counts[1] <= 0:
            del self._held[key]

    def _go(self, key: Key) -> bool:
        """This worker sends its suspect copy: from now on it answers "sending" for it,
        so that no other worker goes first on the strength of a "waiting". False."""
        counts = self._held.get(key)
        if counts is not None and counts[1] > 0:
            counts[1] -= 1
            counts[0] += 1
        return False

    def sent(self, channel: str, event_id: str) -> None:
        now = time.monotonic()
        sent = self._sent
        sent[(channel, event_id)] = now
        sent.move_to_end((channel, event_id))
        while sent and (len(sent) > RECENT_MAX or next(iter(sent.values())) < now - RECENT):
            sent.popitem(last=False)

    def status(self, channel: str, event_id: str) -> str:
        key = (channel, event_id)
        if key in self._sent or (self._seen is not None and self._seen(channel, event_id)):
            return "sent"
        counts = self._held.get(key)
        if counts is None:
            return "no"
        return "sending" if counts[0] > 0 else "waiting"

    # ---- the others

    def live_peers(self, now: float | None = None) -> set[str]:
        at = time.monotonic() if now is None else now
        return {w for w, heard in self.peers.items() if at - heard < PEER_TTL}

    def _heard(self, worker: str) -> bool:
        """Note a message from `worker`; True if it was not known as alive."""
        now = time.monotonic()
        new = now - self.peers.get(worker, -PEER_TTL) >= PEER_TTL
        self.peers[worker] = now
        if new:
            self._count_peers()
        return new

    def _count_peers(self) -> None:
        now = time.monotonic()
        for gone in [w for w, heard in self.peers.items() if now - heard > 10 * PEER_TTL]:
            del self.peers[gone]  # a worker id is new at each start: forget the old ones
        n = len(self.live_peers(now))
        if n != self._live_count:
            self._live_count = n
            if self._on_peers is not None:
                self._on_peers(n)

    async def sent_elsewhere(self, channel: str, event_id: str) -> bool:
        """For a suspect copy: True if another worker sent this event (or sends it, and
        then did); False when this worker should send it."""
        wait = self._ready_at - time.monotonic()
        if wait > 0:  # just started: let the others' answers to `hi` arrive first
            await asyncio.sleep(wait)
        deadline = time.monotonic() + CLAIM_TTL
        while True:
            peers = self.live_peers()
            if not peers:
                return self._go((channel, event_id))
            answers = await self._ask(channel, event_id, peers)
            if "sent" in answers.values():
                return True
            ahead = [
                w for w, s in answers.items() if s == "sending" or (s == "waiting" and w < self.id)
            ]
            silent = peers - answers.keys()
            if not ahead and not silent:
                return self._go((channel, event_id))
            if time.monotonic() > deadline:
                log.warning(
                    "event %s for channel %s: no word from worker(s) %s within %g s; sending",
                    event_id,
                    channel,
                    ", ".join(sorted(ahead or silent)),
                    CLAIM_TTL,
                )
                return self._go((channel, event_id))
            await asyncio.sleep(ASK_AGAIN)
            self._count_peers()

    async def _ask(self, channel: str, event_id: str, peers: set[str]) -> dict[str, str]:
        qid = f"{self.id}.{next(self._ask_ids)}"
        answers: dict[str, str] = {}
        done = asyncio.Event()
        self._asks[qid] = (answers, done, set(peers))
        try:
            await self._publish({"t": "ask", "q": qid, "c": channel, "e": event_id})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), ASK_WAIT)
        finally:
            del self._asks[qid]
        return answers

    # ---- AMQP

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        ch = await connection.channel()
        self._channel = ch
        # gone with the last worker's queue: a fleet leaves nothing behind on RabbitMQ
        self._exchange = await ch.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True
        )
        queue = await ch.declare_queue(
            self.queue_name, durable=False, exclusive=True, auto_delete=True
        )
        await queue.bind(self._exchange)
        self._bound = True
        await queue.consume(self._on_message, no_ack=True)
        self._ready_at = time.monotonic() + DISCOVERY
        await self._publish({"t": "hi"})
        self._beat = asyncio.create_task(self._heartbeat(), name="fleet-heartbeat")

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publish({"t": "bye"}), 2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 2.0)
            self._channel = None
        if self._exchange is not None and not self._bound:
            await self._drop_unbound_exchange()
        self._exchange, self._bound = None, False

    async def _drop_unbound_exchange(self) -> None:
        """A start stopped between declaring the exchange and binding this worker's queue
        (sensord stopped while it connected): RabbitMQ deletes an auto-delete exchange
        only when its last binding goes, so one that never had a binding would stay.
        Deleted unless another worker's queue is bound to it (on a channel of its own:
        the refusal closes it)."""
        if self._connection is None:
            return
        with contextlib.suppress(Exception):
            ch = await asyncio.wait_for(self._connection.channel(), 2.0)
            try:
                await asyncio.wait_for(ch.exchange_delete(self.exchange_name, if_unused=True), 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ch.close(), 2.0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self._publish({"t": "hi"})
            self._count_peers()

    async def _publish(self, body: dict[str, Any], to: str | None = None) -> None:
        """To the fanout, or (`to`) to one worker's queue; lost while disconnected."""
        if self._channel is None or self._exchange is None:
            return
        body["w"] = self.id
        message = aio_pika.Message(json.dumps(body).encode())
        try:
            if to is None:
                await self._exchange.publish(message, routing_key="")
            else:
                await self._channel.default_exchange.publish(message, routing_key=to)
        except Exception as exc:  # noqa: BLE001 - reconnecting: the next beat or ask retries
            log.debug("fleet: cannot publish (%s)", exc)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
            worker = str(body["w"])
            kind = body["t"]
        except (ValueError, KeyError, TypeError):
            return
        if worker == self.id:
            return
        if kind == "bye":
            if self.peers.pop(worker, None) is not None:
                self._count_peers()
            return
        if self._heard(worker) and kind == "hi":
            await self._publish({"t": "hi"})  # a newcomer learns of this worker at once
        if kind == "ask":
            status = self.status(str(body.get("c")), str(body.get("e")))
            reply = {"t": "answer", "q": body.get("q"), "s": status}
            await self._publish(reply, to=f"{self.exchange_name}.{worker}")
        elif kind == "answer":
            pending = self._asks.get(str(body.get("q")))
            if pending is not None:
                answers, done, expected = pending
                answers[worker] = str(body.get("s"))
                if expected <= answers.keys():
                    done.set()
