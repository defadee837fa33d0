"""What a resolution says: the clear threshold of a rule, and a summary that reads as one.

A resolved event rendered with the firing `summary` template says `t-1 temperature 56.6
above 80`. Its summary comes instead from the rule's `resolved_summary` annotation, or,
without one, from `resolution_summary()`: `plant-1/t-1 temperature 56.6, back below 75`.
Pure functions of the rule, the sensor's labels and the value; see docs/rules.md,
"Resolved events".
"""

from __future__ import annotations

from sensord.rules.model import Rule

RESOLVED_SUMMARY = "resolved_summary"  # the annotation key of a rule's resolution template


def clear_threshold(rule: Rule, value: float | None) -> float | None:
    """The threshold a resolving value came back across.

    `clear_below` / `clear_above` when set, else the condition's own bound: `above: 80,
    clear_below: 75` clears at 75, `above: 80` at 80, `below: X` at `clear_above` or X.
    A band has two clear bounds: the one on the value's side (`inside`), the one nearer
    the value (`outside`, whose clearing value lies between them). None for deadman
    rules, and for a band when the value is unknown.
    """
    if rule.above is not None:
        return rule.clear_below if rule.clear_below is not None else rule.above
    if rule.below is not None:
        return rule.clear_above if rule.clear_above is not None else rule.below
    band = _clear_band(rule)
    if band is None or value is None:
        return None
    lo, hi = band
    if rule.inside is not None:
        return lo if value < lo else hi
    return lo if value - lo < hi - value else hi


def _clear_band(rule: Rule) -> tuple[float, float] | None:
    """(low, high) clear bounds of a band rule: `outside` clears between them, `inside`
    below low or above high."""
    if rule.outside is not None:
        lo, hi = rule.outside
        ca, cb = rule.clear_above, rule.clear_below
        return (ca if ca is not None else lo, cb if cb is not None else hi)
    if rule.inside is not None:
        lo, hi = rule.inside
        cb, ca = rule.clear_below, rule.clear_above
        return (cb if cb is not None else lo, ca if ca is not None else hi)
    return None


def is_clear(rule: Rule, value: float) -> bool:
    """True when `value` meets the rule's clear condition (docs/rules.md, "Hysteresis").

    A resolution whose value does not (a changed or removed rule's alert, resolved at a
    reload or restart; a flapping alert whose held resolution is sent once it steadies)
    must not claim the value came back."""
    cb, ca = rule.clear_below, rule.clear_above
    if rule.above is not None:
        return value < cb if cb is not None else value <= rule.above
    if rule.below is not None:
        return value > ca if ca is not None else value >= rule.below
    if rule.outside is not None:
        lo, hi = rule.outside
        return (value > ca if ca is not None else value >= lo) and (
            value < cb if cb is not None else value <= hi
        )
    if rule.inside is not None:
        lo, hi = rule.inside
        return (value < cb if cb is not None else value < lo) or (
            value > ca if ca is not None else value > hi
        )
    return False  # a deadman rule has no value condition


def resolution_summary(rule: Rule, labels: dict[str, str], value: float | None) -> str:
    """The summary of a resolved event when the rule has no `resolved_summary`.

    `plant-1/t-1 temperature 56.6, back below 75`; `… 31, back above 30` for `below`;
    `… 45, back between 33 and 57` for `outside`; `… avg 7.2 over 10m, back below 8` for an
    aggregate, `… rate -3.1/1h, back above -5` for a rate; `plant-1/t-3 temperature
    reporting again` for a deadman; `… 91, no longer firing` when the value is not clear.
    """
    subject = _subject(labels)
    if rule.absent_for is not None:
        return f"{subject} reporting again" if value is not None else f"{subject} no longer firing"
    if value is None:
        return f"{subject} no longer firing"
    measured = f"{subject} {_measure(rule, value)}"
    if not is_clear(rule, value):
        return f"{measured}, no longer firing"
    return f"{measured}, {_back(rule, value)}"


def _subject(labels: dict[str, str]) -> str:
    sensor = "/".join(labels[k] for k in ("site", "device") if labels.get(k))
    kind = labels.get("kind", "")
    return f"{sensor} {kind}" if sensor and kind else sensor or kind


def _measure(rule: Rule, value: float) -> str:
    """The value as the condition saw it: raw, an aggregate over its window, or a rate."""
    if rule.aggregate is not None:
        return f"{rule.aggregate.fn} {value:g} over {_duration(rule.aggregate.window)}"
    if rule.rate is not None:
        return f"rate {value:g}/{_duration(rule.rate.per)}"
    return f"{value:g}"


def _back(rule: Rule, value: float) -> str:
    if rule.above is not None:
        cb = rule.clear_below
        return f"back below {cb if cb is not None else rule.above:g}"
    if rule.below is not None:
        ca = rule.clear_above
        return f"back above {ca if ca is not None else rule.below:g}"
    band = _clear_band(rule)
    assert band is not None  # not a deadman rule: absent_for is handled by the caller
    lo, hi = band
    if rule.outside is not None:
        return f"back between {lo:g} and {hi:g}"
    return f"back below {lo:g}" if value < lo else f"back above {hi:g}"


def _duration(seconds: float) -> str:
    """`10m`, `1h`, `90s`, `1.5s`: the largest unit that divides the duration."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
