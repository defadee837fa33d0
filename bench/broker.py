"""The benchmark's private Mosquitto: `sensord.testing.Mosquitto` under the names bench uses.

The machine's own Mosquitto keeps its stock limits (1000 queued messages per client,
FACTS.md) and may be shared with tests; a benchmark runs its own broker with
`max_queued_messages 0` so that a 100k backlog is kept, not dropped. The launcher itself
lives in sensord.testing, one for tests, benchmarks and users.
"""

from __future__ import annotations

from sensord.testing import MAX_PACKET_ID, MOSQUITTO, BrokerError, Mosquitto, free_port

__all__ = [
    "MAX_PACKET_ID",
    "MOSQUITTO",
    "BrokerError",
    "PrivateMosquitto",
    "broker_config",
    "free_port",
]


class PrivateMosquitto(Mosquitto):
    """`with PrivateMosquitto(max_inflight=...) as broker:` started, and stopped on any exit."""

    def __init__(self, *, max_inflight: int, executable: str = MOSQUITTO) -> None:
        super().__init__(max_inflight_messages=max_inflight, executable=executable)
        self.max_inflight = max_inflight


def broker_config(port: int, max_inflight: int) -> str:
    """The config such a broker runs with on `port`; every limit of the measurement is in it."""
    broker = Mosquitto(max_inflight_messages=max_inflight)
    broker.port = port
    return broker.config()
