"""Unit normalisation per kind: `[ingest.units] temperature = "C"` converts °F and K to °C.

Each unit belongs to one family with a linear conversion to the family's base unit
(`base = value * scale + offset`). Spellings from SenML (RFC 8428 §12.1: `Cel`, `K`, `Pa`)
and the usual sensor spellings (`°F`, `degC`, `hPa`) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    name: str  # canonical spelling, what Reading.unit says after normalisation
    family: str
    scale: float
    offset: float = 0.0


_F = 5.0 / 9.0
_UNITS = [
    # temperature, base kelvin
    Unit("C", "temperature", 1.0, 273.15),
    Unit("F", "temperature", _F, 273.15 - 32.0 * _F),
    Unit("K", "temperature", 1.0),
    # pressure, base pascal
    Unit("Pa", "pressure", 1.0),
    Unit("hPa", "pressure", 100.0),
    Unit("kPa", "pressure", 1000.0),
    Unit("bar", "pressure", 100_000.0),
    Unit("mbar", "pressure", 100.0),
    Unit("psi", "pressure", 6894.757293168),
    # power, base watt
    Unit("W", "power", 1.0),
    Unit("kW", "power", 1000.0),
    # energy, base joule
    Unit("J", "energy", 1.0),
    Unit("Wh", "energy", 3600.0),
    Unit("kWh", "energy", 3_600_000.0),
]
_ALIASES = {
    "°C": "C",
    "degC": "C",
    "Cel": "C",
    "celsius": "C",
    "°F": "F",
    "degF": "F",
    "fahrenheit": "F",
    "kelvin": "K",
    "pa": "Pa",
    "hpa": "hPa",
    "kpa": "kPa",
    "mbar": "mbar",
}

UNITS: dict[str, Unit] = {u.name: u for u in _UNITS}
for _alias, _name in _ALIASES.items():
    UNITS[_alias] = UNITS[_name]


def lookup(name: str) -> Unit | None:
    return UNITS.get(name) or UNITS.get(name.strip())


class Conversion:
    """Converts readings of one kind to one target unit; unknown or foreign units raise."""

    __slots__ = ("_cache", "target")

    def __init__(self, target: str) -> None:
        unit = lookup(target)
        if unit is None:
            raise ValueError(f"unknown unit {target!r}; known: {', '.join(sorted(known_units()))}")
        self.target = unit
        # source spelling -> (scale, offset) straight to the target
        self._cache: dict[str, tuple[float, float]] = {}

    def factors(self, source: str) -> tuple[float, float] | None:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        unit = lookup(source)
        if unit is None or unit.family != self.target.family:
            return None
        t = self.target
        # target = (value * s.scale + s.offset - t.offset) / t.scale
        factors = (unit.scale / t.scale, (unit.offset - t.offset) / t.scale)
        self._cache[source] = factors
        return factors


def known_units() -> list[str]:
    return [u.name for u in _UNITS]
