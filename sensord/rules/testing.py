"""Rule unit tests (`sensord rules test FILE…`), in the manner of `promtool test rules`.

A test file names rule files, gives input series per sensor and expects alerts at given
times; the pure engine plays the series on a simulated clock. See docs/rules.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sensord.alerts.lifecycle import build_event, fingerprint
from sensord.errors import ConfigError, PayloadError, Problem
from sensord.events import Reading
from sensord.ingest.payload import TopicTemplates
from sensord.ops.settings import parse_duration
from sensord.rules.engine import AlertTransition, RuleEngine
from sensord.rules.loader import load_rules, read_yaml, validation_problems

_TOKEN_RE = re.compile(r"^(_|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?:x(\d+))?$")


def parse_values(text: str) -> list[float | None]:
    """`"70 75 _ 81x3"` -> [70, 75, None, 81, 81, 81]: `_` is no reading, `VxN` repeats."""
    out: list[float | None] = []
    for token in text.split():
        m = _TOKEN_RE.match(token)
        if m is None:
            raise ValueError(f"bad value {token!r}: use numbers, '_' for a gap, 'VxN' to repeat")
        value = None if m.group(1) == "_" else float(m.group(1))
        out.extend([value] * (int(m.group(2)) if m.group(2) else 1))
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InputSeries(_Model):
    topic: str | None = None
    labels: dict[str, str] | None = None
    values: str
    start: float = 0.0  # time of the first value

    @field_validator("values")
    @classmethod
    def _values(cls, v: str) -> str:
        parse_values(v)
        return v

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("labels", mode="before")
    @classmethod
    def _stringify(cls, v: object) -> object:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_source(self) -> InputSeries:
        if (self.topic is None) == (self.labels is None):
            raise ValueError("an input series has a topic or labels (site, device, kind)")
        if self.labels is not None and not {"site", "device", "kind"} <= set(self.labels):
            raise ValueError("labels must include site, device and kind")
        return self


class ExpectedAlert(_Model):
    """Labels to match (a subset of the alert's), and optionally annotations."""

    model_config = ConfigDict(extra="allow", frozen=True)
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return {k: str(v) for k, v in (self.model_extra or {}).items()}

    def matches(self, labels: dict[str, str], annotations: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items()) and all(
            annotations.get(k) == v for k, v in self.annotations.items()
        )

    def __str__(self) -> str:
        parts = [f"{k}: {v}" for k, v in self.labels.items()]
        parts += [f"annotations.{k}: {v!r}" for k, v in self.annotations.items()]
        return "{" + ", ".join(parts) + "}"


class AlertCheck(_Model):
    at: float
    firing: list[ExpectedAlert] = Field(default_factory=list)
    resolved: list[ExpectedAlert] = Field(default_factory=list)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: object) -> float:
        return parse_duration(v)


class RuleTest(_Model):
    name: str | None = None
    interval: float = 1.0
    input_series: list[InputSeries] = Field(min_length=1)
    alert_rule_test: list[AlertCheck] = Field(min_length=1)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, v: object) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("interval must be longer than 0s")
        return seconds


class RuleTestFile(_Model):
    rule_files: list[str] = Field(min_length=1)
    evaluation_interval: float = 1.0
    topic_template: str = "sensors/{site}/{device}/{kind}"
    tests: list[RuleTest] = Field(min_length=1)

    @field_validator("evaluation_interval", mode="before")
    @classmethod
    def _interval(cls, v: object) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("evaluation_interval must be longer than 0s")
        return seconds


@dataclass
class _Alert:
    labels: dict[str, str]
    annotations: dict[str, str]

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) + "}"


@dataclass
class Outcome:
    checks: int = 0
    failures: list[str] = field(default_factory=list)


def _fmt_time(t: float) -> str:
    for unit, seconds in (("h", 3600), ("m", 60)):
        if t and t % seconds == 0:
            return f"{t / seconds:g}{unit}"
    return f"{t:g}s"


def _diff(kind: str, expected: list[ExpectedAlert], got: list[_Alert]) -> list[str]:
    """Pair expectations with alerts; what is left on either side is the diff."""
    left = list(got)
    missing: list[ExpectedAlert] = []
    for exp in expected:
        hit = next((a for a in left if exp.matches(a.labels, a.annotations)), None)
        if hit is None:
            missing.append(exp)
        else:
            left.remove(hit)
    if not missing and not left:
        return []
    lines = [f"  {kind}:"]
    lines += [f"    - expected, not there: {e}" for e in missing]
    lines += [f"    + there, not expected: {a}" for a in left]
    return lines


def _series_readings(
    test: RuleTest, template: TopicTemplates, file: str
) -> list[tuple[float, int, Reading]]:
    events: list[tuple[float, int, Reading]] = []
    for order, series in enumerate(test.input_series):
        if series.topic is not None:
            try:
                site, device, kind, extra = template.labels(series.topic)
            except PayloadError as exc:
                raise ConfigError([Problem(file, None, exc.detail)]) from None
        else:
            assert series.labels is not None
            labels = dict(series.labels)
            site, device, kind = labels.pop("site"), labels.pop("device"), labels.pop("kind")
            extra = labels
        for i, value in enumerate(parse_values(series.values)):
            if value is None:
                continue
            t = series.start + i * test.interval
            events.append((t, order, Reading.trusted(site, device, kind, value, t, extra, None)))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def run_test(spec: RuleTestFile, test: RuleTest, rules_dir: Path, file: str) -> Outcome:
    rules = load_rules(spec.rule_files, rules_dir)
    engine = RuleEngine(rules, start=0.0)
    readings = _series_readings(test, TopicTemplates(spec.topic_template), file)
    firing: dict[str, _Alert] = {}
    resolved: list[_Alert] = []

    def apply(transitions: list[AlertTransition]) -> None:
        for tr in transitions:
            if tr.status == "flapping":
                continue
            event = build_event(tr)
            fp = fingerprint(tr.rule.name, tr.labels)
            alert = _Alert(event.labels, event.annotations)
            if tr.status == "firing":
                firing[fp] = alert
            else:
                firing.pop(fp, None)
                resolved.append(alert)

    outcome = Outcome()
    step = spec.evaluation_interval
    next_tick = 0.0
    pos = 0
    title = test.name or f"#{spec.tests.index(test) + 1}"
    for check in sorted(test.alert_rule_test, key=lambda c: c.at):
        # readings and ticks up to `at`, in time order; at equal times the readings first
        while True:
            t_read = readings[pos][0] if pos < len(readings) else None
            if t_read is not None and t_read <= check.at and t_read <= next_tick:
                apply(engine.evaluate(readings[pos][2], t_read))
                pos += 1
            elif next_tick <= check.at:
                apply(engine.tick(next_tick))
                next_tick += step
            else:
                break
        outcome.checks += 1
        lines = _diff("firing", check.firing, list(firing.values()))
        lines += _diff("resolved since the previous check", check.resolved, resolved)
        resolved = []
        if lines:
            outcome.failures.append(
                "\n".join([f"{file}: test {title}, at {_fmt_time(check.at)}:", *lines])
            )
    return outcome


def load_test_file(path: Path) -> RuleTestFile:
    file = str(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "a rule test file is a mapping (rule_files, tests)")])
    try:
        return RuleTestFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, data, lines, file, "tests")) from None


def run_file(path: Path) -> Outcome:
    """Every test of one file; problems with the file itself raise ConfigError."""
    spec = load_test_file(path)
    total = Outcome()
    for test in spec.tests:
        result = run_test(spec, test, path.parent, str(path))
        total.checks += result.checks
        total.failures += result.failures
    return total


def main(paths: list[Path], out: Any, err: Any) -> int:
    """`sensord rules test`: 0 when every expectation holds, 1 otherwise."""
    failed = False
    for path in paths:
        try:
            result = run_file(path)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=err)
            failed = True
            continue
        if result.failures:
            failed = True
            for failure in result.failures:
                print(failure, file=out)
            print(f"{path}: FAILED ({len(result.failures)} of {result.checks} check(s))", file=out)
        else:
            print(f"{path}: ok ({result.checks} check(s))", file=out)
    return 1 if failed else 0
