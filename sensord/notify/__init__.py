"""Notification channels and the consumers that feed them from RabbitMQ (docs/channels.md).

Each channel module registers its type in `registry` (`builtin` lists the built-in ones);
`channels` builds a channel per `[[channels]]` entry, `consumer` feeds them. This package
file stays empty so that `sensord dlq` imports only what it uses.
"""
