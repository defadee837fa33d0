"""Inhibit rules, read from `[[alerts.inhibit]]`."""

from __future__ import annotations

from sensord.alerts.settings import AlertsSettings
from sensord.alerts.silences import Matcher
from sensord.alerts.store import InhibitRule


def inhibit_rules(settings: AlertsSettings) -> list[InhibitRule]:
    return [
        InhibitRule(
            tuple(Matcher.parse(m) for m in r.source),
            tuple(Matcher.parse(m) for m in r.target),
            tuple(r.equal),
        )
        for r in settings.inhibit
    ]
