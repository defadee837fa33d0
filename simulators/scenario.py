"""Scenarios: YAML timelines of events, and what they mean for one sensor at one time.

A scenario file::

    name: heatwave
    description: HVAC failure at plant-1, recovery 27 s later
    repeat: 60s                 # optional: the timeline restarts every 60 s
    events:
      - {at: 3s, event: hvac_failure, site: plant-1, devices: [t-1, t-2]}
      - {at: 30s, event: recover, site: plant-1}

Pure: no clock and no I/O beyond reading the file. Every error names ``file:line``.
"""

from __future__ import annotations

import bisect
import fnmatch
import importlib.resources
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simulators.errors import SimulatorError

HOT_SETPOINT_C = 91.0
"""Where a failed HVAC drives the temperature: far enough above 80 that the lag crosses it fast."""

FAULT_KINDS = (
    "spike",
    "stuck",
    "dropout",
    "malformed",
    "duplicate",
    "out_of_order",
    "clock_skew",
)

EVENTS = ("hvac_failure", "recover", "dropout", "flap", "occupancy", "faults")
_EVENT_KEYS: dict[str, frozenset[str]] = {
    "hvac_failure": frozenset({"setpoint"}),
    "recover": frozenset(),
    "dropout": frozenset(),
    "flap": frozenset({"center", "amplitude", "period"}),
    "occupancy": frozenset({"level"}),
    "faults": frozenset(FAULT_KINDS),
}
_COMMON_KEYS = frozenset({"at", "event", "site", "devices", "kinds"})


class ScenarioError(SimulatorError):
    """A scenario cannot be loaded; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class Flap:
    """The value oscillates: ``center + amplitude * sin(2 pi t / period)``."""

    center: float
    amplitude: float
    period: float


@dataclass(frozen=True, slots=True)
class Condition:
    """What the scenario imposes on one sensor during one stretch of the timeline."""

    setpoint: float | None = None
    """Temperature setpoint override (a failed HVAC); humidity follows the temperature."""
    silent: bool = False
    flap: Flap | None = None
    occupancy: float | None = None
    faults: Mapping[str, float] = field(default_factory=dict)
    """Fault rates that replace the command line's for this sensor."""


NORMAL = Condition()


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the timeline."""

    at: float
    event: str
    site: str = "*"
    devices: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = ("*",)
    params: Mapping[str, float] = field(default_factory=dict)
    line: int = 0

    def matches(self, site: str, device: str, kind: str) -> bool:
        """Whether this event applies to the sensor (shell-style globs)."""
        return (
            fnmatch.fnmatchcase(site, self.site)
            and any(fnmatch.fnmatchcase(device, d) for d in self.devices)
            and any(fnmatch.fnmatchcase(kind, k) for k in self.kinds)
        )

    def apply(self, cond: Condition) -> Condition:
        """The condition after this event, for a sensor it matches."""
        p = self.params
        if self.event == "hvac_failure":
            return replace(cond, setpoint=p.get("setpoint", HOT_SETPOINT_C))
        if self.event == "recover":
            return NORMAL
        if self.event == "dropout":
            return replace(cond, silent=True)
        if self.event == "flap":
            flap = Flap(p.get("center", 80.0), p.get("amplitude", 4.0), p.get("period", 10.0))
            return replace(cond, flap=flap)
        if self.event == "occupancy":
            return replace(cond, occupancy=p.get("level", 1.0))
        return replace(cond, faults={**cond.faults, **p})  # faults


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named timeline, optionally repeating."""

    name: str
    events: tuple[Event, ...] = ()
    repeat: float | None = None
    description: str = ""


class Timeline:
    """Cuts time into segments between event times; a sensor's condition is constant in each.

    With ``repeat``, the timeline restarts from the normal condition every period.
    """

    def __init__(self, scenario: Scenario | None) -> None:
        self.scenario = scenario
        events = sorted(scenario.events, key=lambda e: e.at) if scenario else []
        self.events: tuple[Event, ...] = tuple(events)  # sorted is stable: file order on ties
        self.bounds: list[float] = sorted({e.at for e in events})
        self.repeat = scenario.repeat if scenario else None

    def segment(self, t: float) -> tuple[int, float]:
        """Index of the segment in force at ``t`` (0 = before any event) and when it ends."""
        if not self.bounds:
            return 0, math.inf
        if self.repeat is not None:
            cycle_start = math.floor(t / self.repeat) * self.repeat
            phase = t - cycle_start
            k = bisect.bisect_right(self.bounds, phase)
            end = cycle_start + (self.bounds[k] if k < len(self.bounds) else self.repeat)
        else:
            k = bisect.bisect_right(self.bounds, t)
            end = self.bounds[k] if k < len(self.bounds) else math.inf
        # Float rounding may put a boundary at or before t; time must still move forward.
        return k, max(end, math.nextafter(t, math.inf))

    def condition(self, segment: int, site: str, device: str, kind: str) -> Condition:
        """The sensor's condition in ``segment``: every event up to it, in order."""
        cond = NORMAL
        if segment == 0:
            return cond
        last_at = self.bounds[segment - 1]
        for event in self.events:
            if event.at > last_at:
                break
            if event.matches(site, device, kind):
                cond = event.apply(cond)
        return cond


# --- loading --------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(raw: object) -> float:
    """``30s``, ``2m``, ``1h``, ``500ms`` or a number of seconds; raise ValueError."""
    if isinstance(raw, bool):
        msg = f"not a duration: {raw!r}"
        raise ValueError(msg)
    if isinstance(raw, int | float):
        seconds = float(raw)
    else:
        match = _DURATION.match(str(raw))
        if match is None:
            msg = f"not a duration: {raw!r} (use e.g. 30s, 2m, 1h, 500ms)"
            raise ValueError(msg)
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not (math.isfinite(seconds) and seconds >= 0):
        msg = f"not a duration: {raw!r}"
        raise ValueError(msg)
    return seconds


class _LineDict(dict[str, Any]):
    line = 0


class _Loader(yaml.SafeLoader):
    """Safe YAML whose mappings remember the line they start on."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    mapping = _LineDict(loader.construct_pairs(node, deep=True))
    mapping.line = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _globs(raw: object, where: str, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    msg = f"{where}: {key} must be a name, a glob or a list of them"
    raise ScenarioError(msg)


def _event(raw: object, source: str, fallback_line: int, repeat: float | None) -> Event:
    line = raw.line if isinstance(raw, _LineDict) else fallback_line
    where = f"{source}:{line}"
    if not isinstance(raw, dict):
        msg = f"{where}: an event must be a mapping like {{at: 30s, event: recover}}"
        raise ScenarioError(msg)
    name = raw.get("event")
    if name not in _EVENT_KEYS:
        msg = f"{where}: unknown event {name!r}; known: {', '.join(EVENTS)}"
        raise ScenarioError(msg)
    unknown = set(raw) - _COMMON_KEYS - _EVENT_KEYS[name]
    if unknown:
        allowed = ", ".join(sorted(_COMMON_KEYS | _EVENT_KEYS[name]))
        msg = f"{where}: unknown key {sorted(unknown)[0]!r} for {name} (allowed: {allowed})"
        raise ScenarioError(msg)
    if "at" not in raw:
        msg = f"{where}: event {name} has no 'at'"
        raise ScenarioError(msg)
    try:
        at = parse_duration(raw["at"])
    except ValueError as exc:
        msg = f"{where}: at: {exc}"
        raise ScenarioError(msg) from None
    if repeat is not None and at >= repeat:
        msg = f"{where}: at {raw['at']} is not within the repeat period ({repeat:g} s)"
        raise ScenarioError(msg)
    params: dict[str, float] = {}
    for key in _EVENT_KEYS[name] & set(raw):
        value = raw[key]
        if key == "period":
            try:
                value = parse_duration(value)
            except ValueError as exc:
                msg = f"{where}: period: {exc}"
                raise ScenarioError(msg) from None
            if value <= 0:
                msg = f"{where}: period must be > 0"
                raise ScenarioError(msg)
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"{where}: {key} must be a number, got {value!r}"
            raise ScenarioError(msg)
        if name == "faults" and not 0 <= value <= 1:
            msg = f"{where}: {key} is a rate per reading, within 0..1, got {value}"
            raise ScenarioError(msg)
        params[key] = float(value)
    site = raw.get("site", "*")
    if not isinstance(site, str):
        msg = f"{where}: site must be a name or a glob"
        raise ScenarioError(msg)
    return Event(
        at=at,
        event=name,
        site=site,
        devices=_globs(raw.get("devices", "*"), where, "devices"),
        kinds=_globs(raw.get("kinds", "*"), where, "kinds"),
        params=params,
        line=line,
    )


def parse_scenario(text: str, source: str) -> Scenario:
    """Parse a scenario document; ``source`` names it in errors (a path, or a builtin)."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        msg = f"{source}:{line}: invalid YAML: {exc.problem or exc}"
        raise ScenarioError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"{source}:1: invalid YAML: {exc}"
        raise ScenarioError(msg) from None
    if not isinstance(doc, _LineDict):
        msg = f"{source}:1: a scenario is a mapping with 'events' (and 'name', 'repeat')"
        raise ScenarioError(msg)
    unknown = set(doc) - {"name", "description", "repeat", "events"}
    if unknown:
        msg = f"{source}:{doc.line}: unknown key {sorted(unknown)[0]!r}"
        raise ScenarioError(msg)
    repeat: float | None = None
    if doc.get("repeat") is not None:
        try:
            repeat = parse_duration(doc["repeat"])
        except ValueError as exc:
            msg = f"{source}:{doc.line}: repeat: {exc}"
            raise ScenarioError(msg) from None
        if repeat <= 0:
            msg = f"{source}:{doc.line}: repeat must be > 0"
            raise ScenarioError(msg)
    events = doc.get("events")
    if not isinstance(events, list):
        msg = f"{source}:{doc.line}: 'events' must be a list of events"
        raise ScenarioError(msg)
    name = doc.get("name", Path(source).stem)
    description = doc.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        msg = f"{source}:{doc.line}: name and description must be text"
        raise ScenarioError(msg)
    return Scenario(
        name=name,
        events=tuple(_event(e, source, doc.line, repeat) for e in events),
        repeat=repeat,
        description=description.strip(),
    )


def builtin_names() -> list[str]:
    """Scenarios shipped in ``simulators/scenarios/``."""
    files = importlib.resources.files("simulators.scenarios").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_scenario(spec: str) -> Scenario | None:
    """A builtin by name, or a ``.yaml``/``.yml`` file; ``none`` means no scenario."""
    if spec == "none":
        return None
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"{spec}: cannot read scenario file: {exc.strerror or exc}"
            raise ScenarioError(msg) from None
        return parse_scenario(text, spec)
    if spec not in builtin_names():
        msg = f"unknown scenario {spec!r}; builtin: {', '.join(builtin_names())}, or a .yaml file"
        raise ScenarioError(msg)
    resource = importlib.resources.files("simulators.scenarios") / f"{spec}.yaml"
    return parse_scenario(resource.read_text(encoding="utf-8"), f"{spec}.yaml")
