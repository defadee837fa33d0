"""Telemetry out: every accepted reading to a RabbitMQ stream, the latest values to
Prometheus (`[telemetry]`, docs/telemetry.md)."""
