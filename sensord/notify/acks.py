"""Acknowledging a channel queue's messages in delivery order, many per AMQP frame."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError

log = logging.getLogger("sensord.notify")

# settled messages are acknowledged together at most this long after the first of them
ACK_BATCH_WINDOW = 0.005


def _channel(message: AbstractIncomingMessage) -> object:
    """The AMQP channel a message came on; None once it is closed (aio-pika raises)."""
    try:
        return message.channel
    except ChannelInvalidStateError:
        return None


class BatchedAcks:
    """Acknowledges in delivery order with `multiple=True`: one AMQP frame for each run of
    settled messages instead of one per message (an ack frame per message cost a socket
    write each, about a sixth of the notify role's CPU per webhook in bench/notify.py).

    A message is settled only once its notification was sent, or its copy (retry, dead)
    confirmed; a later message that finished first waits for the earlier ones.
    """

    def __init__(self) -> None:
        self._channel: object = None
        self._order: dict[int, bool] = {}  # delivery tag -> settled, in delivery order
        self._scheduled = False
        self._writes: set[asyncio.Task[None]] = set()

    def track(self, message: AbstractIncomingMessage) -> None:
        if message.channel is not self._channel:  # a new AMQP channel (reconnect): new tags
            self._channel = message.channel
            self._order.clear()
        assert message.delivery_tag is not None
        self._order[message.delivery_tag] = False

    def settle(self, message: AbstractIncomingMessage) -> None:
        if _channel(message) is not self._channel or message.delivery_tag not in self._order:
            return  # delivered on a channel that is gone: RabbitMQ redelivers it
        self._order[message.delivery_tag] = True
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(ACK_BATCH_WINDOW, self._flush)

    def forget(self, message: AbstractIncomingMessage) -> None:
        """The message was nacked on its own: take it out of the order."""
        if _channel(message) is self._channel and message.delivery_tag is not None:
            self._order.pop(message.delivery_tag, None)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        last = None
        while self._order:
            tag, settled = next(iter(self._order.items()))
            if not settled:
                break
            del self._order[tag]
            last = tag
        if last is not None:
            task = asyncio.create_task(self._ack(self._channel, last))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    @staticmethod
    async def _ack(channel: Any, tag: int) -> None:
        try:
            await channel.basic_ack(tag, multiple=True)
        except Exception as exc:  # noqa: BLE001 - the channel is gone: RabbitMQ redelivers
            log.debug("ack up to %d not sent: %s", tag, exc)

    async def drain(self) -> None:
        if self._scheduled:
            self._flush()
        if self._writes:
            await asyncio.wait(list(self._writes))
