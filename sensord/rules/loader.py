"""Rule files: YAML with the line of every key, so that each problem names file:line."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sensord.errors import ConfigError, Problem
from sensord.rules.model import Rule, RuleFile


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


Lines = dict[tuple[str | int, ...], int]


def read_yaml(path: Path) -> tuple[Any, Lines]:
    """Plain data from a YAML file and the line of every key path; problems as ConfigError."""
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
    lines: Lines = {}
    if node is None:
        return None, lines
    problems: list[Problem] = []
    try:
        data = _to_data(node, (), lines, loader, problems, file)
    except RecursionError:
        raise ConfigError(
            [Problem(file, None, "YAML alias refers to itself (recursive)")]
        ) from None
    if problems:
        raise ConfigError(problems)
    return data, lines


def validation_problems(
    exc: ValidationError, data: Any, lines: Lines, file: str, list_key: str = "rules"
) -> list[Problem]:
    """One file:line problem per pydantic error; items of `list_key` are named by `name`."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        where = _dotted(loc)
        if len(loc) >= 2 and loc[0] == list_key and isinstance(loc[1], int):
            items = data.get(list_key) if isinstance(data, dict) else None
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                noun = "rule" if list_key == "rules" else "test"
                where = f"{noun} {item['name']!r}" + (f": {_dotted(loc[2:])}" if loc[2:] else "")
        problems.append(Problem(file, _line_for(lines, loc), f"{where}: {msg}" if where else msg))
    return problems


def _load_rule_file(path: Path) -> tuple[list[Rule], Lines]:
    """The rules of one file and the line of every key path (to place later problems)."""
    file = str(path)
    data, lines = read_yaml(path)
    if data is None:
        return [], lines  # an empty file holds no rules
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "a rule file is a mapping with a 'rules:' list")])
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, data, lines, file)) from None
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
