"""The telemetry stage's part of the composition root (kept out of sensord/app.py)."""

from __future__ import annotations

import asyncio

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.http.history import History
from sensord.ops.metrics import Metrics
from sensord.telemetry.prometheus import SensorGauges
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import ReadingsStream, StreamMetrics


def build_telemetry(
    settings: TelemetrySettings,
    amqp: AmqpSettings,
    metrics: Metrics,
    history: History,
    *,
    edge: bool,
    gate: asyncio.Event | None,
    link: SharedConnection | None,
) -> ReadingsStream | None:
    """Register the Prometheus gauges if asked; the readings stream if asked (an edge only).
    `gate` is the alert drain's `caught_up`: alerts go first. `link`: the publishing
    connection, on which the stream takes a channel of its own."""
    if not edge:
        return None
    if settings.prometheus:
        gauges = SensorGauges(history, settings.prometheus_max_series, settings.prometheus_stale)
        metrics.expositions.append(gauges.render)
    if not settings.stream:
        return None
    stream = ReadingsStream(settings, amqp, gate=gate, link=link)
    metrics.registry.register(StreamMetrics(stream))
    return stream
