"""Which channels re-announce a firing alert, and how often (`repeat_interval`)."""

from __future__ import annotations

from sensord.alerts.settings import AlertsSettings
from sensord.alerts.store import RepeatPolicy
from sensord.amqp.topology import matches
from sensord.events import AlertEvent
from sensord.notify.registry import ChannelSettings


def repeat_policy(channels: list[ChannelSettings], alerts: AlertsSettings) -> RepeatPolicy:
    """Each channel's repeat interval (its own, else `[alerts] repeat_interval`; 0: none)
    for the alerts it takes (severity, match)."""
    out = []
    for ch in channels:
        interval = alerts.repeat_interval
        if ch.repeat_interval is not None:
            interval = ch.repeat_interval
        if interval > 0:

            def takes(event: AlertEvent, ch: ChannelSettings = ch) -> bool:
                return event.severity.value in ch.severities and matches(ch, event.labels)

            out.append((ch.name, interval, takes))
    return RepeatPolicy(tuple(out))
