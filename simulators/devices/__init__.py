"""Simulated devices of the real ecosystems: what `sensord-sim --format <name>` publishes.

Each module here (not starting with `_`) registers one class per sensord payload format with
`@register("<format>")`, publishing as that firmware does: Home Assistant discovery configs
retained, Sparkplug births before data, availability messages. A device class is built as
`cls(device, site)` and offers:

- `birth() -> list[Msg]`: what the firmware sends when it comes up (retained discovery
  configs, NBIRTH/DBIRTH, availability "online", `bridge/devices`, …);
- `state(values, ts) -> list[Msg]`: one report of `values` (shared kind -> value, e.g.
  `{"temperature": 21.5, "humidity": 40.0}`; booleans as 0.0/1.0) at epoch seconds `ts`,
  in as many messages as the firmware uses (one object for Zigbee2MQTT, one topic per
  sensor for ESPHome, …);
- `death() -> list[Msg]`: what marks it offline (the LWT's payload, NDEATH, …).

`Msg` is `(topic, payload, qos, retain)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Protocol, TypeVar

Msg = tuple[str, bytes, int, bool]


class Device(Protocol):
    def birth(self) -> list[Msg]: ...

    def state(self, values: dict[str, float], ts: float) -> list[Msg]: ...

    def death(self) -> list[Msg]: ...


DeviceFactory = Callable[[str, str], Device]
_F = TypeVar("_F", bound=DeviceFactory)
_DEVICES: dict[str, DeviceFactory] = {}


def register(name: str) -> Callable[[_F], _F]:
    def add(factory: _F) -> _F:
        if name in _DEVICES:
            raise ValueError(f"simulated device format {name!r} is registered twice")
        _DEVICES[name] = factory
        return factory

    return add


def names() -> tuple[str, ...]:
    return tuple(sorted(_DEVICES))


def get(name: str) -> DeviceFactory:
    try:
        return _DEVICES[name]
    except KeyError:
        known = ", ".join(names())
        raise ValueError(f"unknown device format {name!r}; known: {known}") from None


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
