"""Alert rules: the model, YAML loading with file:line errors, and the pure engine.

The engine does no I/O and takes time as an argument: `evaluate(reading, now)` and
`tick(now)` return the alert transitions they caused.
"""

from sensord.rules.engine import RuleEngine
from sensord.rules.loader import load_rule_file, load_rules
from sensord.rules.model import Aggregate, Flapping, Rate, Rule, RuleFile, check_template, render
from sensord.rules.records import (
    AlertTransition,
    ClockRecord,
    SensorKey,
    Snapshot,
    StateRecord,
    sensor_key,
)

__all__ = [
    "Aggregate",
    "AlertTransition",
    "ClockRecord",
    "Flapping",
    "Rate",
    "Rule",
    "RuleEngine",
    "RuleFile",
    "SensorKey",
    "Snapshot",
    "StateRecord",
    "check_template",
    "load_rule_file",
    "load_rules",
    "render",
    "sensor_key",
]
