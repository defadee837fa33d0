"""sensord: IoT sensor telemetry and alerting daemon."""

__version__ = "0.1.0"
