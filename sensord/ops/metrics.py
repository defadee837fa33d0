"""Prometheus metrics, in one object built on a registry the service owns (no global).

Per-reading counters are plain ints bumped on the hot path and read at scrape time by a
custom collector: a prometheus_client Counter takes a lock on every inc().
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sensord.ingest.payload import REASONS

# `_created` series double every counter's cardinality for no use on an edge host.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class _HotCounters(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        readings = CounterMetricFamily(
            "sensord_readings", "Readings accepted from MQTT, by source", labels=["source"]
        )
        skipped = CounterMetricFamily(
            "sensord_fields_skipped",
            "Fields of accepted messages that gave no reading (text, null, …), by reason",
            labels=["source", "reason"],
        )
        sources = self._m.sources
        if sources:
            for src in sources:
                readings.add_metric([src.name], src.readings)
                for reason, count in sorted(src.skipped.items()):
                    skipped.add_metric([src.name, reason], count)
        else:
            readings.add_metric(["sensord"], self._m.readings)
        yield readings
        yield skipped
        yield CounterMetricFamily(
            "sensord_readings_late",
            "Readings older than their sensor's newest: kept in history, not evaluated",
            value=self._m.late,
        )
        invalid = CounterMetricFamily(
            "sensord_readings_invalid", "MQTT messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._m.invalid.items()):
            invalid.add_metric([reason], count)
        yield invalid
        yield CounterMetricFamily(
            "sensord_mqtt_messages",
            "MQTT messages received (each gives readings or one refusal)",
            value=self._m.messages,
        )
        yield CounterMetricFamily(
            "sensord_readings_duplicate",
            "Readings skipped as redeliveries (same sensor, timestamp and value again)",
            value=self._m.duplicates,
        )
        yield CounterMetricFamily(
            "sensord_quarantine_published",
            "Refused MQTT messages published to <prefix>.quarantine",
            value=self._m.quarantined,
        )
        yield CounterMetricFamily(
            "sensord_quarantine_dropped",
            "Refused MQTT messages not quarantined: the buffer was full (RabbitMQ down)",
            value=self._m.quarantine_dropped,
        )


class Metrics:
    __slots__ = (
        "alerts",
        "alerts_dropped",
        "alerts_flapping",
        "alerts_suppressed",
        "alerts_unroutable",
        "amqp_connected",
        "amqp_failovers",
        "dlq_depth",
        "duplicates",
        "expositions",
        "fleet_peers",
        "invalid",
        "late",
        "messages",
        "mqtt_connected",
        "notification_seconds",
        "notifications",
        "outbox_oldest_age",
        "outbox_pending",
        "quarantine_dropped",
        "quarantined",
        "readings",
        "registry",
        "rules_loaded",
        "rules_reload_failures",
        "sources",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.readings = 0
        self.invalid: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.duplicates = 0
        self.late = 0
        # the bridge's sources (sensord.ingest.sources.Source): per-source counters
        self.sources: list[Any] = []
        self.messages = 0
        self.quarantined = 0
        self.quarantine_dropped = 0
        self.registry.register(_HotCounters(self))
        # text the /metrics handler appends to the registry's: families too large for
        # prometheus_client's per-sample objects (telemetry/prometheus.py SensorGauges)
        self.expositions: list[Callable[[], bytes]] = []
        self.alerts = Counter(
            "sensord_alerts",
            "Alert transitions evaluated",
            ["severity", "status"],
            registry=self.registry,
        )
        self.alerts_suppressed = Counter(
            "sensord_alerts_suppressed",
            "Alert transitions not notified: firing silenced or inhibited, or resolved unannounced",
            ["status"],
            registry=self.registry,
        )
        self.alerts_unroutable = Counter(
            "sensord_alerts_unroutable",
            "Alert events RabbitMQ returned because no queue is bound for their routing key",
            registry=self.registry,
        )
        self.alerts_dropped = Counter(
            "sensord_alerts_dropped",
            "Alert events dropped because the pending queue was full (amqp.max_pending)",
            registry=self.registry,
        )
        self.notifications = Counter(
            "sensord_notifications",
            "Notification attempts by outcome: sent, retried, dead, skipped, throttled",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.notification_seconds = Histogram(
            "sensord_notification_seconds",
            "Time of one delivery attempt to a channel's target",
            ["channel"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.dlq_depth = Gauge(
            "sensord_dlq_messages",
            "Messages in a channel's dead-letter queue (passive declare, every 15 s)",
            ["channel"],
            registry=self.registry,
        )
        self.fleet_peers = Gauge(
            "sensord_notify_fleet_peers",
            "Other notify workers of this [amqp] prefix heard from (notify/fleet.py)",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "sensord_outbox_oldest_age_seconds",
            "Age of the oldest alert event not yet confirmed by RabbitMQ (0 when none)",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "sensord_outbox_pending",
            "Alert events waiting to be confirmed by RabbitMQ",
            registry=self.registry,
        )
        self.alerts_flapping = Counter(
            "sensord_alerts_flapping",
            "Alerts that began flapping (their notifications are held, not published)",
            ["severity"],
            registry=self.registry,
        )
        self.rules_loaded = Gauge(
            "sensord_rules_loaded",
            "Alert rules in force",
            registry=self.registry,
        )
        self.rules_reload_failures = Counter(
            "sensord_rules_reload_failures",
            "Rule reloads (SIGHUP, POST /-/reload) refused because a rule file is invalid",
            registry=self.registry,
        )
        self.mqtt_connected = Gauge(
            "sensord_mqtt_connected",
            "1 while connected to the MQTT broker",
            registry=self.registry,
        )
        self.amqp_connected = Gauge(
            "sensord_amqp_connected",
            "1 while connected to RabbitMQ",
            registry=self.registry,
        )
        self.amqp_failovers = Counter(
            "sensord_amqp_failovers",
            "Moves of a RabbitMQ connection to another node of the cluster ([amqp] url)",
            ["connection"],
            registry=self.registry,
        )

    def count_invalid(self, reason: str) -> None:
        self.invalid[reason] = self.invalid.get(reason, 0) + 1
