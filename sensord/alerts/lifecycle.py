"""From engine transitions to contract AlertEvents: fingerprint, labels, annotations."""

from __future__ import annotations

import hashlib
import os

from sensord.events import AlertEvent, LabelsMemo, to_datetime
from sensord.rules import AlertTransition, render
from sensord.rules.resolution import RESOLVED_SUMMARY, clear_threshold, resolution_summary


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    """Stable across restarts and hosts: sha256 of the rule name and sorted sensor labels."""
    h = hashlib.sha256(rule.encode())
    for key in sorted(labels):
        h.update(b"\x00" + key.encode() + b"\x01" + labels[key].encode())
    return h.hexdigest()[:16]


_FINGERPRINTS: LabelsMemo[str] = LabelsMemo(lambda rule, labels: fingerprint(str(rule), labels))


def cached_fingerprint(rule: str, labels: dict[str, str]) -> str:
    """`fingerprint`, computed once per (rule, sensor labels dict): see LabelsMemo."""
    return _FINGERPRINTS.get(rule, labels)


_ids: list[str] = []


def new_event_id() -> str:
    """A random (version 4) UUID string, as str(uuid.uuid4()) gives, from one urandom()
    call per 256 ids instead of one each (a syscall and a UUID object per alert were a
    third of building an event in a storm)."""
    if not _ids:
        raw = os.urandom(16 * 256).hex()
        for i in range(0, len(raw), 32):
            h = raw[i : i + 32]
            variant = "89ab"[int(h[16], 16) & 3]
            _ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return _ids.pop()


def derived_event_id(fingerprint: str, status: str, starts_at: float) -> str:
    """A name-based UUID (version 5 layout, SHA-256 truncated) of the transition itself:
    an episode (alert and start time) fires once and resolves once, so the same alert,
    status and start give the same id wherever and whenever it is computed. A central
    rules process that takes a partition over replays the readings after the last
    checkpoint; the transitions they cause again (a `for` timer's too, whose firing time
    depends on the tick) get the ids they had, and the notify side's idempotency
    (notify/dedup.py) drops what was already sent."""
    h = hashlib.sha256(f"{fingerprint}|{status}|{starts_at!r}".encode()).hexdigest()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def build_event(tr: AlertTransition, *, derive_id: bool = False) -> AlertEvent:
    """The contract event of a firing or resolved transition (a flapping marker is none).
    `derive_id`: the event id from the transition (`derived_event_id`), not random."""
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
    clear = clear_threshold(rule, tr.value)
    values: dict[str, object] = {
        **labels,
        "rule": rule.name,
        "value": tr.value if tr.value is not None else "n/a",
        "threshold": tr.threshold,
        "clear_threshold": clear if clear is not None else "n/a",
        "status": status,
    }
    # built from values checked when the rule loaded and the engine computed: no
    # validation per event; every field given, in the model's order
    fingerprint = cached_fingerprint(rule.name, tr.labels)
    event_id = derived_event_id(fingerprint, status, tr.starts_at) if derive_id else new_event_id()
    return AlertEvent.trusted(
        event_id=event_id,
        fingerprint=fingerprint,
        status=status,
        rule=rule.name,
        severity=rule.severity,
        labels=labels,
        annotations=_annotations(tr, values),
        value=tr.value,
        threshold=tr.threshold,
        starts_at=to_datetime(tr.starts_at),
        ends_at=to_datetime(tr.ends_at) if tr.ends_at is not None else None,
        observed_at=to_datetime(tr.observed_at),
    )


def _annotations(tr: AlertTransition, values: dict[str, object]) -> dict[str, str]:
    """The rule's annotations, rendered. A resolved event's `summary` reads as a resolution:
    the rule's `resolved_summary` template, else a generated one (rules/resolution.py);
    `resolved_summary` itself is an instruction to sensord, not an annotation of the alert."""
    templates = tr.rule.annotations
    out = {k: render(v, values) for k, v in templates.items() if k != RESOLVED_SUMMARY}
    if tr.status == "resolved":
        template = templates.get(RESOLVED_SUMMARY)
        if template is not None:
            out["summary"] = render(template, values)
        elif "summary" in out:
            out["summary"] = resolution_summary(tr.rule, tr.labels, tr.value)
    return out
