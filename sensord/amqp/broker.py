"""The FastStream broker on a failover connection (quarantine publishing, declarations).

FastStream 0.7's `RabbitBroker._connect` opens `aio_pika.connect_robust(**connection
kwargs)` on one URL; this one opens sensord's `FailoverConnection` (amqp/failover.py) on
the nodes of `[amqp] url`, and is otherwise FastStream's own `_connect`, line for line
(pyproject.toml pins faststream below 0.8; tests/amqp/test_failover.py runs it).
Imported only where the broker is built: FastStream takes ~1 s to import.
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitBroker

from sensord.amqp.failover import FailoverConnection, NodeRing, connect_robust
from sensord.amqp.settings import AmqpSettings


class FailoverBroker(RabbitBroker):
    def __init__(self, amqp: AmqpSettings, ring: NodeRing, **kwargs: Any) -> None:
        super().__init__(ring.first_url, **kwargs)
        self._amqp = amqp
        self.ring = ring

    async def _connect(self) -> FailoverConnection:
        kwargs = {
            k: v for k, v in self._connection_kwargs.items() if k not in ("url", "ssl_context")
        }
        connection = await connect_robust(self._amqp, self.ring, **kwargs)
        for close_callback in self._on_close:
            connection.close_callbacks.add(close_callback)
        for reconnect_callback in self._on_reconnected:
            connection.reconnect_callbacks.add(reconnect_callback)
        if self._channel is None:
            self.config.connect(connection)
            self._channel = await self.config.channel_manager.get_channel()
        return connection
