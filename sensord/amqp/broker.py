"""The FastStream broker on the process's publishing connection (quarantine publishing).

FastStream 0.7's `RabbitBroker._connect` opens `aio_pika.connect_robust(**connection
kwargs)` of its own, and `stop` closes it. This broker takes the process's shared
publishing connection instead (amqp/shared.py: a `FailoverConnection` on the nodes of
`[amqp] url`) and opens only its default channel on it, as FastStream's `_connect` does,
and its `stop` closes that channel, never the connection, which the other roles' channels
share and its owner closes. pyproject.toml pins faststream below 0.8;
tests/amqp/test_failover.py runs it. Imported only where the broker is built: FastStream
takes ~1 s to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from types import TracebackType
from typing import Any

from aio_pika import RobustQueue
from faststream.rabbit import RabbitBroker, RabbitQueue

from sensord.amqp.failover import FailoverConnection
from sensord.amqp.shared import SharedConnection


class FailoverBroker(RabbitBroker):
    def __init__(self, link: SharedConnection, *, owns_link: bool = False, **kwargs: Any) -> None:
        super().__init__(link.ring.first_url, **kwargs)
        self.link = link
        self.ring = link.ring
        self._owns_link = owns_link  # a broker built alone (tests) closes its connection

    async def _connect(self) -> FailoverConnection:
        connection = await self.link.connect()
        if self._channel is None:
            self.config.connect(connection)
            self._channel = await self.config.channel_manager.get_channel()
        return connection

    async def declare_queue(self, queue: RabbitQueue) -> RobustQueue:
        """Declared, but not again by aio-pika after a reconnect: the restore of one
        channel failing fails the whole connection (aio-pika's `_on_connected`), and a
        classic queue whose node is down cannot be declared (404) until that node is back,
        which would keep the alert drain's channel on the same connection down with it."""
        once = copy.copy(queue)
        once.robust = False
        return await super().declare_queue(once)

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        # FastStream's stop closes its channel, then its connection: here only the channel
        self._connection = None
        channel, self._channel = self._channel, None
        try:
            await super().stop(exc_type, exc_val, exc_tb)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), 2.0)
            if self._owns_link:
                await self.link.close()
