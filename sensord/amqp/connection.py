"""Reaching RabbitMQ: connect and declare, retried until it works, never fatal.

An edge keeps ingesting while RabbitMQ is away (alerts wait in the outbox); this loop
brings the AMQP side up whenever RabbitMQ is back. A topology conflict
(PRECONDITION_FAILED: a queue declared with other arguments) is a configuration error
and stops sensord.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import aio_pika

log = logging.getLogger("sensord.amqp")

# what an unreachable or restarting RabbitMQ raises while connecting or declaring
TRANSIENT = (OSError, asyncio.IncompleteReadError, aio_pika.exceptions.AMQPError, TimeoutError)


async def connect_until_up(
    start: Callable[[], Awaitable[None]],
    reset: Callable[[], Awaitable[None]],
    interval: float,
) -> None:
    """`start()` until it succeeds; after each failure `reset()` (errors ignored), then
    wait `interval` seconds. Logs the first failure and every 30th (an outage can last)."""
    attempt = 0
    while True:
        try:
            await start()
        except aio_pika.exceptions.ChannelPreconditionFailed:
            raise
        except TRANSIENT as exc:
            attempt += 1
            if attempt == 1 or attempt % 30 == 0:
                log.warning(
                    "RabbitMQ unreachable (%s: %s); retrying (attempt %d)",
                    type(exc).__name__,
                    exc,
                    attempt,
                )
            with contextlib.suppress(Exception):
                await reset()
            await asyncio.sleep(interval)
        else:
            return


class AmqpLink:
    """Brings the AMQP side up (connect, declare, start consumers) and keeps trying while
    RabbitMQ is away; `up` is set once it is up. The steps are the roles' own: `start`
    runs them in order, `reset` undoes them after a failed attempt."""

    def __init__(
        self,
        start: Sequence[Callable[[], Awaitable[None]]],
        reset: Sequence[Callable[[], Awaitable[None]]],
        interval: float,
        on_up: Callable[[], None],
    ) -> None:
        self._start, self._reset = start, reset
        self.interval = interval
        self._on_up = on_up
        self.up = asyncio.Event()

    async def _start_all(self) -> None:
        for step in self._start:
            await step()

    async def _reset_all(self) -> None:
        for step in self._reset:
            with contextlib.suppress(Exception):
                await step()

    async def run(self) -> None:
        await connect_until_up(self._start_all, self._reset_all, self.interval)
        self.up.set()
        self._on_up()
