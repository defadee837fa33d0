"""Alert rules: YAML loading with line numbers, validation, and a pure evaluation engine.

The engine does no I/O and takes time as an argument: `observe(reading)` and `tick(now)`
return the alert transitions they caused.
"""

from __future__ import annotations

import glob
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sensord.config import parse_duration
from sensord.errors import ConfigError, Problem
from sensord.events import Reading, Severity

_FORMATTER = string.Formatter()


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


class Rule(BaseModel):
    # allow_inf_nan=False: `above: .nan` would compare false forever and never fire
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    name: str = Field(min_length=1)
    match: dict[str, str] = Field(default_factory=dict)
    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    for_: float = Field(default=0.0, alias="for")
    absent_for: float | None = None
    severity: Severity = Severity.WARNING
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("for_", "absent_for", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("match", "labels", mode="before")
    @classmethod
    def _stringify(cls, v: object) -> object:
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v

    @field_validator("annotations")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for text in v.values():
            check_template(text)
        return v

    @model_validator(mode="after")
    def _combination(self) -> Rule:
        conditions = [k for k in ("above", "below", "absent_for") if getattr(self, k) is not None]
        if len(conditions) != 1:
            raise ValueError(
                "a rule needs exactly one condition: above, below or absent_for"
                + (f" (found {', '.join(conditions)})" if conditions else "")
            )
        if self.clear_below is not None:
            if self.above is None:
                raise ValueError("clear_below goes with above")
            if self.clear_below > self.above:
                raise ValueError(
                    f"clear_below ({self.clear_below:g}) must not be above above ({self.above:g})"
                )
        if self.clear_above is not None:
            if self.below is None:
                raise ValueError("clear_above goes with below")
            if self.clear_above < self.below:
                raise ValueError(
                    f"clear_above ({self.clear_above:g}) must not be below below ({self.below:g})"
                )
        if self.absent_for is not None and self.for_:
            raise ValueError("for does not apply to absent_for rules")
        return self

    @property
    def threshold(self) -> float | None:
        if self.above is not None:
            return self.above
        if self.below is not None:
            return self.below
        return self.absent_for

    def matches(self, labels: dict[str, str]) -> bool:
        for key, pattern in self.match.items():
            value = labels.get(key)
            if value is None or not fnmatchcase(value, pattern):
                return False
        return True


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[Rule] = Field(default_factory=list)


# ---------------------------------------------------------------- YAML with positions


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that builds plain data and records the line of every key path."""


def _to_data(  # noqa: PLR0917 - recursive helper, positional for brevity
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    loader: _LineLoader,
    problems: list[Problem],
    file: str,
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, loader, problems, file)
            if not isinstance(key, str | int | float | bool):
                problems.append(Problem(file, key_node.start_mark.line + 1, "keys must be scalars"))
                continue
            skey = str(key) if not isinstance(key, str) else key
            if skey in out:
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, f"duplicate key {skey!r}")
                )
            child = (*path, skey)
            out[skey] = _to_data(value_node, child, lines, loader, problems, file)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_data(item, (*path, i), lines, loader, problems, file)
            for i, item in enumerate(node.value)
        ]
    return _construct(node, loader, problems, file)


def _construct(node: yaml.Node, loader: _LineLoader, problems: list[Problem], file: str) -> Any:
    """A scalar's value; a bad tag or tagged value (`!!float abc`) is a problem, not a crash."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        problems.append(Problem(file, node.start_mark.line + 1, f"YAML error: {exc.problem}"))
    except ValueError as exc:
        problems.append(Problem(file, node.start_mark.line + 1, f"bad YAML value: {exc}"))
    return None


def _line_for(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    for n in range(len(loc), -1, -1):
        if (line := lines.get(loc[:n])) is not None:
            return line
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_rule_file(path: Path) -> list[Rule]:
    return _load_rule_file(path)[0]


def _load_rule_file(path: Path) -> tuple[list[Rule], dict[tuple[str | int, ...], int]]:
    """The rules of one file and the line of every key path (to place later problems)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, None, f"cannot read: {exc.strerror}")]) from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, f"YAML syntax error: {exc.problem}")]) from None
    finally:
        loader.dispose()
    lines: dict[tuple[str | int, ...], int] = {}
    if node is None:
        return [], lines  # an empty file holds no rules
    problems: list[Problem] = []
    try:
        data = _to_data(node, (), lines, loader, problems, file)
    except RecursionError:
        raise ConfigError(
            [Problem(file, None, "YAML alias refers to itself (recursive)")]
        ) from None
    if problems:
        raise ConfigError(problems)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "a rule file is a mapping with a 'rules:' list")])
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            where = _dotted(loc)
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                rules = data.get("rules")
                item = rules[loc[1]] if isinstance(rules, list) else None
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    where = f"rule {item['name']!r}" + (f": {_dotted(loc[2:])}" if loc[2:] else "")
            problems.append(Problem(file, _line_for(lines, loc), f"{where}: {msg}"))
        raise ConfigError(problems) from None
    return parsed.rules, lines


def load_rules(patterns: Sequence[str], base_dir: Path) -> list[Rule]:
    """Load every file matched by the glob patterns; names must be unique across files."""
    problems: list[Problem] = []
    rules: list[Rule] = []
    origin: dict[str, str] = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
        matched = sorted(glob.glob(full))
        if not matched:
            problems.append(Problem(full, None, "no rule file matches this pattern"))
        for name in matched:
            try:
                loaded, lines = _load_rule_file(Path(name))
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            for i, rule in enumerate(loaded):
                line = _line_for(lines, ("rules", i, "name"))
                here = f"{name}:{line}" if line is not None else name
                if rule.name in origin:
                    problems.append(
                        Problem(
                            name,
                            line,
                            f"rule {rule.name!r} is already defined in {origin[rule.name]}",
                        )
                    )
                origin[rule.name] = here
                rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return rules


# ---------------------------------------------------------------- evaluation

SensorKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """What the engine decided: an alert began firing or resolved."""

    rule: Rule
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    value: float | None
    starts_at: float
    observed_at: float
    ends_at: float | None = None


@dataclass(slots=True)
class _State:
    rule: Rule
    labels: dict[str, str]
    pending_since: float | None = None
    firing_since: float | None = None
    last_value: float | None = None
    last_seen: float = 0.0


@dataclass(slots=True)
class RuleEngine:
    rules: list[Rule]
    # per sensor: the states of the rules that match it (computed once per sensor)
    _sensors: dict[SensorKey, list[_State]] = field(default_factory=dict)

    def states_for(self, reading: Reading) -> list[_State]:
        key = (reading.site, reading.device, reading.kind, *reading.labels.values())
        states = self._sensors.get(key)
        if states is None:
            labels = {
                **reading.labels,
                "site": reading.site,
                "device": reading.device,
                "kind": reading.kind,
            }
            states = [_State(rule, labels) for rule in self.rules if rule.matches(labels)]
            self._sensors[key] = states
        return states

    def observe(self, reading: Reading, now: float) -> list[AlertTransition]:
        out: list[AlertTransition] = []
        value, ts = reading.value, reading.ts
        for st in self.states_for(reading):
            st.last_seen = now
            rule = st.rule
            if rule.absent_for is not None:
                if st.firing_since is not None:  # the silent sensor speaks again
                    out.append(
                        AlertTransition(
                            rule, "resolved", st.labels, value, st.firing_since, ts, ends_at=ts
                        )
                    )
                    st.firing_since = None
                continue
            st.last_value = value
            if rule.above is not None:
                breach = value > rule.above
                clear = value < rule.clear_below if rule.clear_below is not None else not breach
            else:
                assert rule.below is not None
                breach = value < rule.below
                clear = value > rule.clear_above if rule.clear_above is not None else not breach
            if st.firing_since is not None:
                if clear:
                    out.append(
                        AlertTransition(
                            rule, "resolved", st.labels, value, st.firing_since, ts, ends_at=ts
                        )
                    )
                    st.firing_since = None
            elif breach:
                if st.pending_since is None:
                    st.pending_since = ts
                if ts - st.pending_since >= rule.for_:
                    st.firing_since = st.pending_since if rule.for_ else ts
                    st.pending_since = None
                    out.append(
                        AlertTransition(rule, "firing", st.labels, value, st.firing_since, ts)
                    )
            else:
                st.pending_since = None
        return out

    def tick(self, now: float) -> list[AlertTransition]:
        """Fire pending alerts whose `for` elapsed between readings, and deadman alerts."""
        out: list[AlertTransition] = []
        for states in self._sensors.values():
            for st in states:
                rule = st.rule
                if rule.absent_for is not None:
                    if st.firing_since is None and now - st.last_seen >= rule.absent_for:
                        st.firing_since = now
                        out.append(AlertTransition(rule, "firing", st.labels, None, now, now))
                elif st.pending_since is not None and now - st.pending_since >= rule.for_:
                    st.firing_since = st.pending_since
                    st.pending_since = None
                    out.append(
                        AlertTransition(
                            rule, "firing", st.labels, st.last_value, st.firing_since, now
                        )
                    )
        return out

    def sensors(self) -> Iterable[SensorKey]:
        return self._sensors.keys()
