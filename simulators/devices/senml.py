"""A SenML device (RFC 8428): one JSON pack per report on `senml/<site>/<device>/pack`,
the device in the base name (`bn = "<device>/"`), the report's time in the base time (`bt`),
the first unit in the base unit (`bu`); each kind a record `n`, in RFC 8428 §12.1 units.

SenML has no availability of its own: this device's birth and its last will (death) are a
pack `[{"bn": "<device>/", "n": "online", "vb": true|false}]`, retained.
"""

from __future__ import annotations

import json

from simulators.devices import Msg, register

# shared kind -> (SenML unit, factor from the kind's usual unit), RFC 8428 §12.1
UNITS: dict[str, tuple[str, float]] = {
    "temperature": ("Cel", 1.0),
    "humidity": ("%RH", 1.0),
    "pressure": ("Pa", 100.0),  # hPa -> Pa
    "battery": ("%EL", 1.0),
    "illuminance": ("lx", 1.0),
    "voltage": ("V", 1.0),
    "current": ("A", 1.0),
    "power": ("W", 1.0),
    "energy": ("J", 3_600_000.0),  # kWh -> J
    "co2": ("ppm", 1.0),
}
BINARY = frozenset({"occupancy", "contact", "water_leak", "smoke", "tamper", "motion"})


@register("senml")
class SenmlDevice:
    def __init__(self, device: str, site: str) -> None:
        self.device = device
        self.topic = f"senml/{site}/{device}/pack"
        self.bn = f"{device}/"

    def _online(self, up: bool) -> list[Msg]:
        pack = [{"bn": self.bn, "n": "online", "vb": up}]
        return [(self.topic, json.dumps(pack).encode(), 1, True)]

    def birth(self) -> list[Msg]:
        return self._online(True)

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        pack: list[dict[str, object]] = []
        bu: str | None = None
        for kind, value in values.items():
            rec: dict[str, object] = {"n": kind}
            if not pack:
                rec = {"bn": self.bn, "bt": ts, **rec}
            if kind in BINARY:
                rec["vb"] = bool(value)
            else:
                unit, factor = UNITS.get(kind, ("", 1.0))
                if unit and bu is None:
                    bu = unit
                    rec["bu"] = unit
                elif unit and unit != bu:
                    rec["u"] = unit
                rec["v"] = value * factor if factor != 1.0 else value
            pack.append(rec)
        return [(self.topic, json.dumps(pack).encode(), 1, False)]

    def death(self) -> list[Msg]:
        return self._online(False)
