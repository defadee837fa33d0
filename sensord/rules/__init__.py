"""Alert rules: the model, YAML loading with file:line errors, and the pure engine.

The engine does no I/O and takes time as an argument: `evaluate(reading, now)` and
`tick(now)` return the alert transitions they caused.
"""

from sensord.rules.engine import (
    AlertTransition,
    ClockRecord,
    RuleEngine,
    SensorKey,
    Snapshot,
    StateRecord,
    sensor_key,
)
from sensord.rules.loader import load_rule_file, load_rules
from sensord.rules.model import Aggregate, Flapping, Rate, Rule, RuleFile, check_template, render

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
