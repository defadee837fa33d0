"""Prometheus metrics, in one object built on a registry the service owns (no global).

Per-reading counters are plain ints bumped on the hot path and read at scrape time by a
custom collector: a prometheus_client Counter takes a lock on every inc().
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sensord.payload import REASONS

# `_created` series double every counter's cardinality for no use on an edge host.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


class _HotCounters(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "sensord_readings", "Readings accepted from MQTT", value=self._m.readings
        )
        invalid = CounterMetricFamily(
            "sensord_readings_invalid", "MQTT messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._m.invalid.items()):
            invalid.add_metric([reason], count)
        yield invalid


class Metrics:
    __slots__ = (
        "alerts",
        "alerts_dropped",
        "alerts_flapping",
        "alerts_unroutable",
        "amqp_connected",
        "invalid",
        "mqtt_connected",
        "notifications",
        "outbox_pending",
        "readings",
        "registry",
        "rules_loaded",
        "rules_reload_failures",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.readings = 0
        self.invalid: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.registry.register(_HotCounters(self))
        self.alerts = Counter(
            "sensord_alerts",
            "Alert transitions evaluated",
            ["severity", "status"],
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
            "Notification attempts by outcome",
            ["channel", "outcome"],
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

    def count_invalid(self, reason: str) -> None:
        self.invalid[reason] = self.invalid.get(reason, 0) + 1
