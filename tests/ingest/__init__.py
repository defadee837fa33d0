"""Tests of sensord/ingest: the MQTT client, topics, payload formats, quarantine."""
