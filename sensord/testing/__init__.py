"""Test tools shipped with sensord, for our tests, our benchmarks and your own tests.

Like `structlog.testing`: real things on loopback, no mocks, and no test framework
imported (use them from pytest, unittest or a script):

- `Mosquitto`: a private broker on a free port (limits, persistence, TLS, users), always
  stopped; `wait_subscribed()` reads its log.
- `WebhookSink`: an aiohttp server recording webhook POSTs, failing when told to.
- `TcpProxy`: a TCP proxy that cuts and restores connections to a real service.
- `free_port()`, `make_tls_files()`.

See docs/testing.md.
"""

from sensord.testing.mosquitto import (
    MAX_PACKET_ID,
    MOSQUITTO,
    STOCK_MAX_INFLIGHT,
    BrokerError,
    Mosquitto,
)
from sensord.testing.ports import free_port
from sensord.testing.proxy import TcpProxy
from sensord.testing.tls import TlsFiles, make_tls_files
from sensord.testing.webhook import WebhookSink

__all__ = [
    "MAX_PACKET_ID",
    "MOSQUITTO",
    "STOCK_MAX_INFLIGHT",
    "BrokerError",
    "Mosquitto",
    "TcpProxy",
    "TlsFiles",
    "WebhookSink",
    "free_port",
    "make_tls_files",
]
