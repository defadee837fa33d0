"""Sensor fleet simulator for sensord: temperature readings published over MQTT.

Self-contained on purpose: it imports nothing from ``sensord`` and speaks only the
"Readings on MQTT" contract (JSON ``{"value", "ts", "unit"}`` payloads).
"""
