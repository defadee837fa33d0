"""What a notification says: the Alertmanager bodies, the console line, text templates."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sensord.events import AlertEvent

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for an alert with no known end


def rfc3339(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def alertmanager_body(events: list[AlertEvent], receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook body, version 4 (contract: ARCHITECTURE.md)."""
    first = events[0]
    common_labels = dict(first.labels)
    common_annotations = dict(first.annotations)
    for ev in events[1:]:
        common_labels = {k: v for k, v in common_labels.items() if ev.labels.get(k) == v}
        common_annotations = {
            k: v for k, v in common_annotations.items() if ev.annotations.get(k) == v
        }
    status = "firing" if any(ev.status == "firing" for ev in events) else "resolved"
    group_labels = {"alertname": first.rule}
    return {
        "version": "4",
        "groupKey": "{}:{alertname=" + json.dumps(first.rule) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": ev.status,
                "labels": ev.labels,
                "annotations": ev.annotations,
                "startsAt": rfc3339(ev.starts_at),
                "endsAt": rfc3339(ev.ends_at) if ev.ends_at is not None else ZERO_TIME,
                "generatorURL": "",
                "fingerprint": ev.fingerprint,
            }
            for ev in events
        ],
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def console_line(event: AlertEvent) -> str:
    labels = event.labels
    sensor = f"{labels.get('site', '?')}/{labels.get('device', '?')}"
    when = event.ends_at if event.status == "resolved" and event.ends_at else event.observed_at
    summary = event.annotations.get("summary", "")
    return (
        f"{when.strftime('%H:%M:%S')} {event.status.upper():<8} {event.severity.value:<8} "
        f"{event.rule}  {sensor}  value={_fmt(event.value)} threshold={_fmt(event.threshold)}"
        + (f"  {summary}" if summary else "")
    )


class _Number:
    """A template number: `{value}` prints like `81.2`, `{value:.1f}` works, None is `n/a`."""

    __slots__ = ("_v",)

    def __init__(self, value: float | None) -> None:
        self._v = value

    def __format__(self, spec: str) -> str:
        if self._v is None:
            return "n/a"
        return format(self._v, spec) if spec else f"{self._v:g}"

    def __str__(self) -> str:
        return format(self, "")


def template_fields(event: AlertEvent, channel: str, count: int = 1) -> dict[str, object]:
    """The fields a template may use (sensord.notify.settings.TEMPLATE_FIELDS)."""
    labels = event.labels
    when = event.ends_at if event.status == "resolved" and event.ends_at else event.observed_at
    return {
        "status": event.status,
        "STATUS": event.status.upper(),
        "severity": event.severity.value,
        "rule": event.rule,
        "site": labels.get("site", ""),
        "device": labels.get("device", ""),
        "kind": labels.get("kind", ""),
        "value": _Number(event.value),
        "threshold": _Number(event.threshold),
        "summary": event.annotations.get("summary", ""),
        "fingerprint": event.fingerprint,
        "event_id": event.event_id,
        "starts_at": rfc3339(event.starts_at),
        "ends_at": rfc3339(event.ends_at) if event.ends_at else "",
        "time": when.strftime("%H:%M:%S"),
        "channel": channel,
        "count": count,
    }


def render(template: str, event: AlertEvent, channel: str, count: int = 1) -> str:
    return template.format_map(template_fields(event, channel, count))
