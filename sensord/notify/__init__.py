"""Notification channels and the consumers that feed them from RabbitMQ (docs/channels.md).

`channels` builds a channel per `[[channels]]` entry, `consumer` feeds them; this package
file stays empty so that `sensord dlq` imports only what it uses.
"""
