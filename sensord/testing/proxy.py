"""A TCP proxy on loopback in front of a real service: the fault injector of our tests."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from sensord.testing.ports import free_port


class TcpProxy:
    """Connect to `proxy.port` instead of the service; `down()` cuts, `up()` restores.

    The port is chosen at once, so a config can name it before the proxy accepts anything
    (a service that is unreachable from the start).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))

    async def up(self) -> None:
        """Accept connections (the service is 'reachable')."""
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Refuse new connections and cut the open ones (an abort: no FIN, as a cable cut)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()
