"""Unit normalisation per kind: `[ingest.units] temperature = "C"` converts °F and K to °C.

The spellings sensord accepts are an explicit table (`_TABLE`): each unit has a canonical
name (what `Reading.unit` says after conversion), a family (units convert only within their
family) and a pint expression. The conversion factors come from pint (the maintained units
library), never from numbers of our own: for a (source, target) pair, `target = value *
scale + offset` with `offset = pint(0 source -> target)` and `scale = pint(1 source ->
target) - offset`, computed once per pair and cached. docs/formats/units.md lists the table.

Why a table and not pint's parser on what devices send: pint does not know SenML's and Home
Assistant's spellings as written (`Cel`, `%RH`, `µg/m³` with either µ), some spellings mean
another unit there than to a sensor (SenML `C` is coulomb, `F` farad; here they are °C and
°F), pint puts units in one dimension that must not mix here (W and var, % and ° and bits),
and parsing text from the network with pint on the hot path would be slow and unbounded.

pint costs ~0.55 s to import and build its registry, so it is loaded lazily: the first
`Conversion(...)` loads it (i.e. only when `[ingest.units]` is configured, at config load),
and builds the factors of every unit of the target's family then, so that `factors()` on
the per-message path is a dict lookup. `import sensord.ingest.units`, `lookup`,
`canonical` and `known_units` never import pint.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fractions import Fraction  # imported with pint, when needed

    import pint


@dataclass(frozen=True, slots=True)
class Unit:
    name: str  # canonical spelling, what Reading.unit says after normalisation
    family: str  # units convert to each other only within one family
    pint: str  # the pint expression of the unit
    aliases: tuple[str, ...] = ()  # other accepted spellings


def _u(name: str, family: str, expr: str, *aliases: str) -> Unit:
    return Unit(name, family, expr, aliases)


# Both micro signs are accepted: µ MICRO SIGN (U+00B5, Home Assistant's) and μ GREEK SMALL
# LETTER MU (U+03BC), plus "u" (SenML's ASCII, RFC 8798 `ug/m3`).
_MICRO = ("µ", "μ", "u")


def _micro(name: str, family: str, expr: str, *aliases: str) -> Unit:
    """A unit spelled with a micro sign: `name` uses µ U+00B5; μ and u are aliases."""
    spellings = {name.replace("µ", m) for m in _MICRO} | {
        a.replace("µ", m) for a in aliases for m in _MICRO
    }
    spellings.discard(name)
    return Unit(name, family, expr, tuple(sorted(spellings)))


# Sources of the spellings: SenML RFC 8428 §12.1 (primary units) and RFC 8798 (secondary
# units), Home Assistant's homeassistant/const.py (UnitOf*, PERCENTAGE, LIGHT_LUX,
# CONCENTRATION_*, SIGNAL_STRENGTH_*), and what sensord accepted before pint.
_TABLE: tuple[Unit, ...] = (
    # temperature (pint's offset units degC/degF: 0 °C -> 32 °F, not a delta)
    _u("C", "temperature", "degC", "°C", "℃", "degC", "Cel", "celsius", "Celsius"),
    _u("F", "temperature", "degF", "°F", "℉", "degF", "fahrenheit", "Fahrenheit"),
    _u("K", "temperature", "kelvin", "kelvin", "Kelvin"),
    # pressure
    _u("Pa", "pressure", "pascal", "pa", "pascal"),
    _u("hPa", "pressure", "hectopascal", "hpa"),
    _u("kPa", "pressure", "kilopascal", "kpa"),
    _u("MPa", "pressure", "megapascal"),
    _u("bar", "pressure", "bar"),
    _u("cbar", "pressure", "centibar"),
    _u("mbar", "pressure", "millibar"),
    _u("psi", "pressure", "psi"),
    _u("inHg", "pressure", "inHg"),
    _u("mmHg", "pressure", "mmHg"),
    # power, apparent power, reactive power: one dimension in pint, three quantities here
    _u("W", "power", "watt", "watt"),
    _u("mW", "power", "milliwatt"),
    _u("kW", "power", "kilowatt"),
    _u("MW", "power", "megawatt"),
    _u("BTU/h", "power", "Btu / hour"),
    _u("VA", "apparent_power", "volt_ampere"),
    _u("kVA", "apparent_power", "kilovolt_ampere"),
    # pint has no var; a var is a volt times an ampere, kept apart from W and VA
    _u("var", "reactive_power", "volt * ampere", "VAr", "VAR"),
    _u("kvar", "reactive_power", "kilovolt * ampere", "kVAr", "kVAR"),
    # energy
    _u("J", "energy", "joule"),
    _u("kJ", "energy", "kilojoule"),
    _u("MJ", "energy", "megajoule"),
    _u("GJ", "energy", "gigajoule"),
    _u("mWh", "energy", "milliwatt_hour"),
    _u("Wh", "energy", "watt_hour"),
    _u("kWh", "energy", "kilowatt_hour"),
    _u("MWh", "energy", "megawatt_hour"),
    _u("GWh", "energy", "gigawatt_hour"),
    _u("cal", "energy", "calorie"),
    _u("kcal", "energy", "kilocalorie"),
    # electricity
    _u("V", "voltage", "volt"),
    _u("mV", "voltage", "millivolt"),
    _micro("µV", "voltage", "microvolt"),
    _u("kV", "voltage", "kilovolt"),
    _u("A", "current", "ampere"),
    _u("mA", "current", "milliampere"),
    _micro("µA", "current", "microampere"),
    _u("Ah", "charge", "ampere_hour"),
    _u("mAh", "charge", "milliampere_hour"),
    _u("Ohm", "resistance", "ohm", "Ω", "ohm"),
    _u("S/m", "conductivity", "siemens / meter"),
    _u("mS/cm", "conductivity", "millisiemens / centimeter"),
    _micro("µS/cm", "conductivity", "microsiemens / centimeter"),
    # frequency and rates
    _u("Hz", "frequency", "hertz"),
    _u("kHz", "frequency", "kilohertz"),
    _u("MHz", "frequency", "megahertz"),
    _u("GHz", "frequency", "gigahertz"),
    _u("1/s", "frequency", "1 / second"),
    _u("1/min", "frequency", "1 / minute", "beat/min"),
    # time
    _micro("µs", "time", "microsecond"),
    _u("ms", "time", "millisecond"),
    _u("s", "time", "second"),
    _u("min", "time", "minute"),
    _u("h", "time", "hour"),
    _u("d", "time", "day"),
    # length, area, volume
    _u("mm", "length", "millimeter"),
    _u("cm", "length", "centimeter"),
    _u("m", "length", "meter"),
    _u("km", "length", "kilometer"),
    _u("in", "length", "inch"),
    _u("ft", "length", "foot"),
    _u("yd", "length", "yard"),
    _u("mi", "length", "mile"),
    _u("cm²", "area", "centimeter ** 2", "cm2"),
    _u("m²", "area", "meter ** 2", "m2"),
    _u("km²", "area", "kilometer ** 2", "km2"),
    _u("ha", "area", "hectare"),
    _u("mL", "volume", "milliliter", "ml"),
    _u("L", "volume", "liter", "l"),
    _u("m³", "volume", "meter ** 3", "m3"),
    _u("ft³", "volume", "foot ** 3", "ft3"),
    _u("gal", "volume", "gallon"),  # US gallon, as Home Assistant's
    _u("fl. oz.", "volume", "fluid_ounce"),  # US fluid ounce
    _u("m³/h", "volume_flow", "meter ** 3 / hour", "m3/h"),
    _u("m³/s", "volume_flow", "meter ** 3 / second", "m3/s"),
    _u("L/min", "volume_flow", "liter / minute", "l/min"),
    _u("L/s", "volume_flow", "liter / second", "l/s"),
    _u("mL/s", "volume_flow", "milliliter / second"),
    _u("gal/min", "volume_flow", "gallon / minute"),
    _u("ft³/min", "volume_flow", "foot ** 3 / minute"),
    # speed (precipitation intensity is a speed too)
    _u("m/s", "speed", "meter / second"),
    _u("km/h", "speed", "kilometer / hour"),
    _u("m/h", "speed", "meter / hour"),
    _u("mph", "speed", "mile / hour"),
    _u("kn", "speed", "knot"),
    _u("ft/s", "speed", "foot / second"),
    _u("mm/h", "speed", "millimeter / hour"),
    _u("mm/d", "speed", "millimeter / day"),
    _u("in/h", "speed", "inch / hour"),
    _u("in/d", "speed", "inch / day"),
    _u("m/s²", "acceleration", "meter / second ** 2", "m/s2"),
    # mass and mass concentration
    _micro("µg", "mass", "microgram"),
    _u("mg", "mass", "milligram"),
    _u("g", "mass", "gram"),
    _u("kg", "mass", "kilogram"),
    _u("oz", "mass", "ounce"),
    _u("lb", "mass", "pound"),
    _u("st", "mass", "stone"),
    _micro("µg/m³", "concentration", "microgram / meter ** 3", "µg/m3"),
    _u("mg/m³", "concentration", "milligram / meter ** 3", "mg/m3"),
    _u("g/m³", "concentration", "gram / meter ** 3", "g/m3"),
    _u("kg/m³", "concentration", "kilogram / meter ** 3", "kg/m3"),
    _micro("µg/ft³", "concentration", "microgram / foot ** 3"),
    # ratios: %RH and %EL keep their own names (a target of "%RH" stays "%RH")
    _u("%", "ratio", "percent", "/100"),
    _u("%RH", "ratio", "percent"),
    _u("%EL", "ratio", "percent"),
    _u("/", "ratio", "dimensionless"),
    _u("‰", "ratio", "permille", "/1000"),
    _u("ppm", "ratio", "ppm"),
    _u("ppb", "ratio", "millippm"),  # pint has no ppb; pint's milli prefix on its ppm
    # light and radiation
    _u("lx", "illuminance", "lux", "lux"),
    _u("lm", "luminous_flux", "lumen"),
    _u("cd/m²", "luminance", "candela / meter ** 2", "cd/m2"),
    _u("W/m²", "irradiance", "watt / meter ** 2", "W/m2"),
    # logarithmic: dBm <-> dBW is linear (an offset); dB only to itself
    _u("dBm", "power_level", "dBm"),
    _u("dBW", "power_level", "dBW"),
    _u("dB", "decibel", "decibel"),
    # angle (wind direction)
    _u("°", "angle", "degree", "deg"),
    _u("rad", "angle", "radian"),
    # information and data rate
    _u("bit", "information", "bit"),
    _u("B", "information", "byte"),
    _u("kB", "information", "kilobyte"),
    _u("MB", "information", "megabyte"),
    _u("GB", "information", "gigabyte"),
    _u("KiB", "information", "kibibyte"),
    _u("MiB", "information", "mebibyte"),
    _u("GiB", "information", "gibibyte"),
    _u("bit/s", "data_rate", "bit / second"),
    _u("kbit/s", "data_rate", "kilobit / second"),
    _u("Mbit/s", "data_rate", "megabit / second"),
    _u("Gbit/s", "data_rate", "gigabit / second"),
    _u("B/s", "data_rate", "byte / second"),
    _u("kB/s", "data_rate", "kilobyte / second"),
    _u("MB/s", "data_rate", "megabyte / second"),
)


def _spellings() -> Iterator[tuple[str, Unit]]:
    for unit in _TABLE:
        yield unit.name, unit
        for alias in unit.aliases:
            yield alias, unit


UNITS: dict[str, Unit] = {}
for _spelling, _unit in _spellings():
    if UNITS.setdefault(_spelling, _unit) is not _unit:
        raise AssertionError(f"unit spelling {_spelling!r} twice in the table")
_FAMILIES: dict[str, tuple[Unit, ...]] = {}
for _unit in _TABLE:
    _FAMILIES[_unit.family] = (*_FAMILIES.get(_unit.family, ()), _unit)


def lookup(name: str) -> Unit | None:
    """The unit a spelling means (surrounding spaces ignored), or None."""
    return UNITS.get(name) or UNITS.get(name.strip())


def canonical(unit: str) -> str:
    """The canonical spelling of a known unit (`Cel` and `°C` -> `C`); others unchanged."""
    found = UNITS.get(unit)
    return unit if found is None else found.name


def known_units() -> list[str]:
    """The canonical names, in table order (families together)."""
    return [u.name for u in _TABLE]


_registry_lock = threading.Lock()
_registry_box: list[pint.UnitRegistry[Fraction]] = []


def registry() -> pint.UnitRegistry[Fraction]:
    """pint's registry with its default definitions, built on first use (~0.55 s)."""
    if not _registry_box:
        with _registry_lock:
            if not _registry_box:
                from fractions import Fraction  # noqa: PLC0415 - with pint, when needed

                import pint  # noqa: PLC0415 - ~0.2 s to import, ~0.35 s to build: only when used

                # exact rational arithmetic: 0 °C is 32 °F, not 31.999999999999936
                _registry_box.append(pint.UnitRegistry(non_int_type=Fraction))
    return _registry_box[0]


def _magnitude(quantity: pint.Quantity[Any]) -> Fraction | float:
    """The magnitude as what it is here: a Fraction (registry built with non_int_type=
    Fraction), a float for logarithmic units; pint types it as any of its Magnitudes."""
    from fractions import Fraction  # noqa: PLC0415 - loaded with pint

    magnitude = quantity.magnitude
    if not isinstance(magnitude, Fraction | float):
        raise TypeError(f"pint gave a {type(magnitude).__name__} magnitude")
    return magnitude


@functools.cache
def pair_factors(source: Unit, target: Unit) -> tuple[float, float] | None:
    """(scale, offset) with `target = value * scale + offset`, from pint; None across
    families (or if pint cannot convert, or the conversion is not linear)."""
    if source.family != target.family:
        return None
    quantity = registry().Quantity
    from fractions import Fraction  # noqa: PLC0415 - loaded with pint

    import pint  # noqa: PLC0415 - loaded by registry() above; for its error class

    try:
        zero, one, ten = (
            _magnitude(quantity(Fraction(x), source.pint).to(target.pint)) for x in (0, 1, 10)
        )
    except pint.PintError:
        return None
    # exact Fractions, except for logarithmic units (floats)
    scale, offset = float(one - zero), float(zero)
    if abs(float(ten) - (10.0 * scale + offset)) > 1e-9 * max(1.0, abs(float(ten))):
        return None  # logarithmic against linear (dBm -> W): not (scale, offset)
    return scale, offset


class Conversion:
    """Converts readings of one kind to one target unit; unknown or foreign units give None.

    Built once per configured kind: loads pint (first time) and computes the factors of
    every spelling of the target's family, so `factors()` is one dict lookup."""

    __slots__ = ("_factors", "target")

    def __init__(self, target: str) -> None:
        unit = lookup(target)
        if unit is None:
            raise ValueError(
                f"unknown unit {target!r}; known: {', '.join(known_units())}"
                " (and their other spellings, docs/formats/units.md)"
            )
        self.target = unit
        # source spelling -> (scale, offset) straight to the target
        self._factors: dict[str, tuple[float, float]] = {}
        for source in _FAMILIES[unit.family]:
            factors = pair_factors(source, unit)
            if factors is not None:
                self._factors[source.name] = factors
                for alias in source.aliases:
                    self._factors[alias] = factors

    def factors(self, source: str) -> tuple[float, float] | None:
        """(scale, offset) from `source` to the target, or None (unknown or foreign unit)."""
        found = self._factors.get(source)
        if found is None:
            stripped = source.strip()
            if stripped != source:
                return self._factors.get(stripped)
        return found
