"""AMQP headers sensord sets on retried and dead-lettered notifications (docs/channels.md)."""

from __future__ import annotations

from typing import Any

ATTEMPTS_HEADER = "x-sensord-attempts"
ERROR_HEADER = "x-sensord-error"
CHANNEL_HEADER = "x-sensord-channel"
DEAD_AT_HEADER = "x-sensord-dead-at"
# set by the edge on a repeat of a firing alert: the channels it is for, comma-separated
# ("*": every channel); channels not named acknowledge it without notifying
REPEAT_HEADER = "x-sensord-repeat-for"
# set by the edge on an alert event it publishes again (its first publish was not
# confirmed, or happened before a restart): the notify side checks the fleet first
RESENT_HEADER = "x-sensord-resent"
# headers RabbitMQ adds on dead-lettering; attempts are counted from our own header
BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


def header_int(headers: dict[str, Any], name: str) -> int:
    value = headers.get(name, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def header_str(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
