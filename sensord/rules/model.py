"""The rule model (YAML contract, ARCHITECTURE.md + docs/rules.md) and safe templates."""

from __future__ import annotations

import hashlib
import string
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sensord.events import Severity
from sensord.ops.settings import parse_duration

_FORMATTER = string.Formatter()
GLOB_CHARS = frozenset("*?[")
DEFAULT_STALE_AFTER = 300.0
DEFAULT_MAX_SAMPLES = 1000


def check_template(template: str) -> str:
    """Allow `{name}` and `{name:.1f}`; refuse attribute or item access and conversions."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"template field {{{name}}} is not allowed: use plain names like {{value}}"
            )
        if conversion:
            raise ValueError(f"template field {{{name}!{conversion}}}: conversions are not allowed")
        if spec and "{" in spec:
            raise ValueError(f"template field {{{name}}}: nested fields are not allowed")
    return template


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: dict[str, object]) -> str:
    """Format a checked template; a missing name stays as `{name}`, a bad spec keeps the text."""
    try:
        return template.format_map(_Missing(values))
    except (ValueError, TypeError):
        return template


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Aggregate(_Part):
    """The condition applies to `fn` over the readings of the last `window` (reading time).

    With `by` (label names) the rule judges groups, not sensors: the window holds the
    readings of every matching sensor that shares those labels' values (docs/rules.md,
    "Rules across sensors")."""

    fn: Literal["avg", "min", "max", "p95", "count"]
    window: float
    max_samples: int = Field(default=DEFAULT_MAX_SAMPLES, ge=1, le=100_000)
    by: list[str] | None = None

    @field_validator("by")
    @classmethod
    def _by(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("by lists at least one label name (site, device, kind or another)")
        if any(not name for name in v):
            raise ValueError("by lists label names; an empty one names no label")
        seen: set[str] = set()
        for name in v:
            if name in seen:
                raise ValueError(f"label {name!r} is listed twice in by")
            seen.add(name)
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: object) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("window must be longer than 0s")
        return seconds


class Rate(_Part):
    """Change per `per` from the first to the last reading of the last `window` (default `per`)."""

    per: float
    window: float | None = None
    max_samples: int = Field(default=DEFAULT_MAX_SAMPLES, ge=2, le=100_000)

    @field_validator("per", "window", mode="before")
    @classmethod
    def _durations(cls, v: object) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("must be longer than 0s")
        return seconds

    @property
    def span(self) -> float:
        return self.window if self.window is not None else self.per


class Flapping(_Part):
    """Kapacitor's flapping detection: weighted state-change score over `history` evaluations."""

    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    history: int = Field(default=21, ge=3, le=64)

    @model_validator(mode="after")
    def _order(self) -> Flapping:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


Band = tuple[float, float]


class Rule(BaseModel):
    # allow_inf_nan=False: `above: .nan` would compare false forever and never fire
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    name: str = Field(min_length=1)
    match: dict[str, str] = Field(default_factory=dict)
    above: float | None = None
    below: float | None = None
    outside: Band | None = None
    inside: Band | None = None
    aggregate: Aggregate | None = None
    rate: Rate | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    for_: float = Field(default=0.0, alias="for")
    keep_firing_for: float = 0.0
    stale_after: float = DEFAULT_STALE_AFTER
    absent_for: float | None = None
    expect: list[str] = Field(default_factory=list)
    flapping: Flapping | None = None
    severity: Severity = Severity.WARNING
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("for_", "absent_for", "keep_firing_for", "stale_after", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("stale_after")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("stale_after must be longer than 0s")
        return v

    @field_validator("match", "labels", mode="before")
    @classmethod
    def _stringify(cls, v: object) -> object:
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v

    @field_validator("outside", "inside")
    @classmethod
    def _band(cls, v: Band | None) -> Band | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"[lo, hi] needs lo < hi, got [{v[0]:g}, {v[1]:g}]")
        return v

    @field_validator("expect")
    @classmethod
    def _expect(cls, v: list[str]) -> list[str]:
        if any(not item for item in v):
            raise ValueError("expect lists device names or globs; an empty one matches nothing")
        return v

    @field_validator("annotations")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for text in v.values():
            check_template(text)
        return v

    @model_validator(mode="after")
    def _combination(self) -> Rule:
        keys = ("above", "below", "outside", "inside", "absent_for")
        conditions = [k for k in keys if getattr(self, k) is not None]
        if len(conditions) != 1:
            raise ValueError(
                "a rule needs exactly one condition: above, below, outside, inside or absent_for"
                + (f" (found {', '.join(conditions)})" if conditions else "")
            )
        grouped = self.aggregate is not None and self.aggregate.by is not None
        if grouped and (self.absent_for is not None or self.expect):
            raise ValueError(
                "aggregate.by does not go with absent_for or expect: a group has no deadman"
                " clock (watch its sensors with a deadman rule of their own)"
            )
        if grouped and self.rate is not None:
            raise ValueError(
                "aggregate.by does not go with rate: a group's window mixes several sensors,"
                " a rate needs one sensor's readings"
            )
        if self.absent_for is not None:
            self._check_deadman()
        else:
            if self.expect:
                raise ValueError("expect goes with absent_for")
            self._check_clear()
        if self.aggregate is not None and self.rate is not None:
            raise ValueError("a rule takes aggregate or rate, not both")
        return self

    def _check_deadman(self) -> None:
        extra = [
            k
            for k in (
                "for_",
                "keep_firing_for",
                "clear_below",
                "clear_above",
                "aggregate",
                "rate",
                "flapping",
            )
            if getattr(self, k)
        ]
        if extra:
            names = ", ".join("for" if k == "for_" else k for k in extra)
            raise ValueError(f"{names} does not apply to absent_for rules")

    def _check_clear(self) -> None:
        cb, ca = self.clear_below, self.clear_above
        if self.above is not None:
            if ca is not None:
                raise ValueError("clear_above goes with below, outside or inside, not above")
            if cb is not None and cb > self.above:
                raise ValueError(f"clear_below ({cb:g}) must not be above above ({self.above:g})")
        elif self.below is not None:
            if cb is not None:
                raise ValueError("clear_below goes with above, outside or inside, not below")
            if ca is not None and ca < self.below:
                raise ValueError(f"clear_above ({ca:g}) must not be below below ({self.below:g})")
        elif self.outside is not None:
            lo, hi = self.outside
            if cb is not None and cb > hi:
                raise ValueError(f"clear_below ({cb:g}) must not be above outside's high ({hi:g})")
            if ca is not None and ca < lo:
                raise ValueError(f"clear_above ({ca:g}) must not be below outside's low ({lo:g})")
            if (ca if ca is not None else lo) >= (cb if cb is not None else hi):
                raise ValueError("clear_above must be below clear_below (the clear band is empty)")
        elif self.inside is not None:
            lo, hi = self.inside
            if cb is not None and cb > lo:
                raise ValueError(f"clear_below ({cb:g}) must not be above inside's low ({lo:g})")
            if ca is not None and ca < hi:
                raise ValueError(f"clear_above ({ca:g}) must not be below inside's high ({hi:g})")

    @property
    def threshold(self) -> float | None:
        """The threshold of the rule's event body: `above`, `below` or `absent_for`."""
        if self.above is not None:
            return self.above
        if self.below is not None:
            return self.below
        return self.absent_for

    @property
    def definition(self) -> str:
        """A stable digest of everything but the name: equal digests, equal behaviour."""
        body = self.model_dump_json(by_alias=True, exclude={"name"})
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def matches(self, labels: dict[str, str]) -> bool:
        for key, pattern in self.match.items():
            value = labels.get(key)
            if value is None or not fnmatchcase(value, pattern):
                return False
        return True

    @property
    def group_by(self) -> list[str] | None:
        """The `aggregate.by` labels of a rule that judges groups, else None."""
        return self.aggregate.by if self.aggregate is not None else None

    def literal_match(self) -> dict[str, str]:
        """The match labels that are plain values, not globs (labels of declared sensors)."""
        return {k: v for k, v in self.match.items() if not GLOB_CHARS.intersection(v)}


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[Rule] = Field(default_factory=list)
