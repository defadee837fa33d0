"""Settings of the telemetry stage: `[telemetry]` (the readings stream and the Prometheus
gauges; docs/telemetry.md, docs/configuration.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from sensord.amqp.settings import AmqpSettings
from sensord.ops.settings import Duration, Section
from sensord.telemetry.partition import stream_names


class TelemetrySettings(Section):
    # every accepted reading to the RabbitMQ stream queue <prefix>.readings
    stream: bool = False
    # retention (x-max-age) and size bound (x-max-length-bytes) of the stream
    stream_max_age: Duration = 7 * 86400.0
    stream_max_bytes: int | None = Field(default=None, ge=1)
    # one AMQP message per batch: a reading waits at most this long, a message holds at
    # most batch_max readings
    batch: Duration = 0.1
    batch_max: int = Field(default=1000, ge=1, le=100_000)
    # readings held while RabbitMQ is away; beyond it the oldest are dropped (counted)
    buffer: int = Field(default=100_000, ge=1)
    # the latest value per sensor on /metrics
    prometheus: bool = False
    prometheus_max_series: int = Field(default=10_000, ge=1)
    prometheus_stale: Duration = 900.0
    # N > 1: N streams <prefix>.readings.0 … .N-1, a reading's one chosen by a stable hash
    # of these labels (telemetry/partition.py); the edges and the rules processes of one
    # cluster must agree on both
    partitions: int = Field(default=1, ge=1, le=1024)
    partition_by: list[str] = Field(default_factory=lambda: ["site"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> TelemetrySettings:
        if self.batch <= 0:
            raise ValueError("batch must be longer than 0s")
        if self.stream_max_age < 1:
            raise ValueError("stream_max_age must be at least 1s")
        if len(set(self.partition_by)) != len(self.partition_by):
            raise ValueError("partition_by names a label twice")
        if self.prometheus_stale <= 0:
            raise ValueError("prometheus_stale must be longer than 0s")
        return self

    def stream_names(self, amqp: AmqpSettings) -> list[str]:
        """The readings streams, partition i at index i (telemetry/partition.py)."""
        return stream_names(amqp.prefix, self.partitions)

    @property
    def max_age_argument(self) -> str:
        """x-max-age in RabbitMQ's own units (Y, M, D, h, m, s): whole seconds."""
        return f"{int(self.stream_max_age)}s"
