"""From engine transitions to contract AlertEvents: fingerprint, labels, annotations."""

from __future__ import annotations

import hashlib
import uuid

from sensord.events import AlertEvent, to_datetime
from sensord.rules import AlertTransition, render


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    """Stable across restarts and hosts: sha256 of the rule name and sorted sensor labels."""
    h = hashlib.sha256(rule.encode())
    for key in sorted(labels):
        h.update(b"\x00" + key.encode() + b"\x01" + labels[key].encode())
    return h.hexdigest()[:16]


def build_event(tr: AlertTransition) -> AlertEvent:
    """The contract event of a firing or resolved transition (a flapping marker is none)."""
    status = tr.status
    if status == "flapping":
        raise ValueError("a flapping marker is not published as an alert event")
    rule = tr.rule
    labels = {
        "alertname": rule.name,
        **tr.labels,
        **rule.labels,
        "severity": rule.severity.value,
    }
    values: dict[str, object] = {
        **labels,
        "rule": rule.name,
        "value": tr.value if tr.value is not None else "n/a",
        "threshold": tr.threshold,
        "status": status,
    }
    return AlertEvent(
        event_id=str(uuid.uuid4()),
        fingerprint=fingerprint(rule.name, tr.labels),
        status=status,
        rule=rule.name,
        severity=rule.severity,
        labels=labels,
        annotations={k: render(v, values) for k, v in rule.annotations.items()},
        value=tr.value,
        threshold=tr.threshold,
        starts_at=to_datetime(tr.starts_at),
        ends_at=to_datetime(tr.ends_at) if tr.ends_at is not None else None,
        observed_at=to_datetime(tr.observed_at),
    )
