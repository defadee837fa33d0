"""Node failover: one connection walks the nodes of a cluster (`[amqp] url` as a list).

A `NodeRing` is one connection owner's view of the cluster: the nodes in a shuffled order
(so that many edges and workers spread over the nodes), which one it is on, and the
jittered backoff after a whole round of them failed. `FailoverConnection` is aio-pika's
robust connection that takes the ring's next node for each connection attempt, so that a
lost node is left for the next one; its robust channels and consumers are restored there
by aio-pika as after any reconnect.

It relies on aio-pika 10.2's `RobustConnection`: its connection factory calls
`_RobustConnection__connect_transport()` for each attempt (overridden here, to set `url`
and the pause before the next attempt), `Connection.connect` reads `self.url` once per
attempt, and `_on_connection_close` / `_on_connected` run on loss and on success.
pyproject.toml pins aio-pika below 11; tests/amqp/test_failover.py checks those names.

After a node died, the first attempt waits `LOSS_PAUSE` (jittered): a channel opened on a
surviving node within ~0.3 s of a quorum queue leader's death nacked every publish for as
long as it stayed open (FACTS.md, "A local RabbitMQ cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection
from yarl import URL

from sensord.amqp.settings import AmqpSettings, safe_node

log = logging.getLogger("sensord.amqp")

# before the first attempt after a loss: past the window of nacking channels (FACTS.md)
LOSS_PAUSE = (0.4, 0.8)
# between two nodes of one round: quick, the next node is probably fine
NEXT_NODE_PAUSE = (0.05, 0.2)
MAX_BACKOFF = 30.0


class NodeRing:
    """The nodes one connection owner walks: shuffled start, then round robin.

    `on_move(old, new)` is called when a connection is made to another node than the last
    one (a failover: `sensord_amqp_failovers_total`)."""

    def __init__(
        self,
        settings: AmqpSettings,
        name: str,
        *,
        on_move: Callable[[str, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._urls = settings.connection_urls()
        self.nodes = [safe_node(u) for u in self._urls]
        self._rng = rng or random.Random()
        self._order = list(range(len(self._urls)))
        self._rng.shuffle(self._order)
        self._pos = -1
        self._failed_rounds = 0
        self._interval = settings.reconnect_interval
        self._on_move = on_move
        self.connected: str | None = None  # host:port while connected
        self._last: str | None = None  # the node of the last connection made
        self.moves = 0

    def __len__(self) -> int:
        return len(self._urls)

    @property
    def first_url(self) -> str:
        return self._urls[0]

    @property
    def trying(self) -> str:
        """The node of the current (or last) attempt."""
        return self.nodes[self._order[max(self._pos, 0)]]

    def next_url(self) -> str:
        """The URL (with credentials: never log it) of the next attempt."""
        self._pos = (self._pos + 1) % len(self._order)
        return self._urls[self._order[self._pos]]

    def pause_after_failure(self) -> float:
        """How long to wait if the attempt just started fails."""
        if len(self._urls) == 1:
            return self._interval  # one node: as before, reconnect_interval
        if self._pos < len(self._order) - 1:
            return self._rng.uniform(*NEXT_NODE_PAUSE)
        self._failed_rounds += 1  # every node failed: back off, jittered
        grown = self._interval * 2.0 ** min(self._failed_rounds - 1, 8)
        return min(grown, max(self._interval, MAX_BACKOFF)) * self._rng.uniform(0.5, 1.0)

    def loss_pause(self) -> float:
        return self._rng.uniform(*LOSS_PAUSE)

    def made(self) -> None:
        """A connection to `trying` is up."""
        node = self.trying
        self._failed_rounds = 0
        if self._last is not None and node != self._last:
            self.moves += 1
            log.warning("%s: RabbitMQ node %s lost, moved to %s", self.name, self._last, node)
            if self._on_move is not None:
                self._on_move(self._last, node)
        self._last = self.connected = node

    def lost(self) -> None:
        self.connected = None


def tls_context(settings: AmqpSettings) -> ssl.SSLContext | None:
    """The TLS context of amqps:// nodes: `ca_file` (else the system's CAs), the client
    certificate, and `tls_insecure` for the host name check only (never the chain)."""
    if not settings.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.cert_file is not None and settings.key_file is not None:
        ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    if settings.tls_insecure:
        ctx.check_hostname = False
    return ctx


class FailoverConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, each attempt on the ring's next node."""

    def __init__(
        self,
        url: URL,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ring: NodeRing,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, loop, **kwargs)
        self.ring = ring
        self._lost = False

    def __str__(self) -> str:  # aio-pika logs the connection: the node, no credentials
        return f"RabbitMQ node {self.ring.trying}"

    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802 - aio-pika's name
        if self._lost:
            self._lost = False
            await asyncio.sleep(self.ring.loss_pause())
        self.url = URL(self.ring.next_url())
        # read by aio-pika's factory only if this attempt fails
        self.reconnect_interval = self.ring.pause_after_failure()
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]  # aio-pika 10.2's private step, see module doc

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self.ring.made()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        was_up = self.ring.connected is not None
        self.ring.lost()
        if was_up and not self._close_called:
            self._lost = True
        await super()._on_connection_close(closing)


async def connect_robust(
    settings: AmqpSettings,
    ring: NodeRing,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - aio-pika's own connect(timeout=)
    **kwargs: Any,
) -> FailoverConnection:
    """A failover connection on the ring's next node that answers (raises if none does:
    fail fast, the caller retries with the same ring). `kwargs` are aio-pika's connection
    parameters (`reconnect_interval`, `fail_fast`)."""
    last: BaseException | None = None
    for _ in range(len(ring)):
        # the URL is replaced by the ring's next node before each attempt
        conn = FailoverConnection(
            URL(ring.first_url), ring=ring, ssl_context=tls_context(settings), **kwargs
        )
        try:
            await conn.connect(timeout=timeout)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            last = exc
            with contextlib.suppress(Exception):
                await conn.close()
            continue
        except asyncio.CancelledError:  # a stop during the attempt: leave no task behind
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            raise
        return conn
    assert last is not None
    raise last


async def connect_any(settings: AmqpSettings) -> AbstractConnection:
    """A plain connection to the first node that answers, in a shuffled order (declaring
    the topology, the CLI)."""
    ring = NodeRing(settings, "declare")
    last: BaseException | None = None
    for _ in range(len(ring)):
        url = ring.next_url()
        try:
            return await aio_pika.connect(url, ssl_context=tls_context(settings))
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            last = exc
    assert last is not None
    raise last
