"""Unit conversion: the spelling table, pint's factors, the cache, and the lazy pint import."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.ingest import kinds, units
from sensord.ingest.units import Conversion, canonical, known_units, lookup


def convert(value: float, source: str, target: str) -> float:
    factors = Conversion(target).factors(source)
    assert factors is not None, (source, target)
    scale, offset = factors
    return value * scale + offset


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        # temperature: offsets, not deltas
        (0, "C", "F", 32.0),
        (0, "°C", "K", 273.15),
        (32, "°F", "C", 0.0),
        (273.15, "K", "°C", 0.0),
        (212, "degF", "K", 373.15),
        (-40, "F", "C", -40.0),
        (-40, "C", "F", -40.0),
        (0, "K", "F", -459.67),
        (20, "Cel", "degF", 68.0),
        (100, "℃", "℉", 212.0),
        # pressure
        (1, "inHg", "hPa", 33.8639),
        (1, "psi", "kPa", 6.894757),
        (760, "mmHg", "hPa", 1013.25),
        (1013.25, "hPa", "kPa", 101.325),
        (1, "bar", "mbar", 1000.0),
        (1, "cbar", "Pa", 1000.0),
        # energy and power
        (1, "kWh", "J", 3.6e6),
        (1, "Wh", "J", 3600.0),
        (1, "MWh", "kWh", 1000.0),
        (1, "kcal", "kJ", 4.184),
        (1, "kW", "W", 1000.0),
        (1, "BTU/h", "W", 0.293071),
        (1, "kvar", "var", 1000.0),
        (1, "kVA", "VA", 1000.0),
        # concentrations and ratios
        (1000, "µg/m³", "mg/m³", 1.0),
        (1000, "μg/m³", "mg/m³", 1.0),
        (7, "ug/m3", "µg/m³", 7.0),
        (1, "mg/m³", "µg/ft³", 28.316846592),
        (1, "ppm", "ppb", 1000.0),
        (1000, "ppb", "ppm", 1.0),
        (1, "%", "ppm", 10_000.0),
        (50, "%RH", "%", 50.0),
        (0.5, "/", "%", 50.0),
        (5, "‰", "%", 0.5),
        # electricity, frequency, time
        (1500, "mV", "V", 1.5),
        (1, "A", "µA", 1e6),
        (1, "Ah", "mAh", 1000.0),
        (1, "kHz", "Hz", 1000.0),
        (60, "1/min", "Hz", 1.0),
        (72, "beat/min", "1/s", 1.2),
        (1, "h", "s", 3600.0),
        (1500, "ms", "s", 1.5),
        # length, volume, speed, mass
        (1, "in", "cm", 2.54),
        (1, "mi", "km", 1.609344),
        (1, "gal", "L", 3.785411784),
        (1, "m³", "L", 1000.0),
        (1, "m3/h", "L/min", 1000 / 60),
        (1, "km/h", "m/s", 1 / 3.6),
        (1, "mph", "km/h", 1.609344),
        (1, "kn", "km/h", 1.852),
        (1, "lb", "kg", 0.45359237),
        (1, "st", "lb", 14.0),
        # logarithmic power levels: linear between themselves
        (0, "dBm", "dBW", -30.0),
        (20, "dBW", "dBm", 50.0),
        # information, angle, light
        (1, "KiB", "B", 1024.0),
        (1, "B/s", "bit/s", 8.0),
        (180, "°", "rad", math.pi),
        (3, "lux", "lx", 3.0),
    ],
)
def test_conversions(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_exact_where_the_definitions_are_exact() -> None:
    # pint's registry works with Fractions: no float noise in the factors themselves
    assert Conversion("F").factors("C") == (1.8, 32.0)
    assert Conversion("C").factors("K") == (1.0, -273.15)
    exact = Fraction(27315, 100) - Fraction(32 * 5, 9)
    assert Conversion("K").factors("F") == (float(Fraction(5, 9)), float(exact))
    assert convert(0, "C", "F") == 32.0
    assert Conversion("J").factors("kWh") == (3.6e6, 0.0)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        # what sensord accepted before pint keeps its canonical name
        ("C", "C"),
        ("°C", "C"),
        ("degC", "C"),
        ("Cel", "C"),
        ("celsius", "C"),
        ("F", "F"),
        ("°F", "F"),
        ("degF", "F"),
        ("fahrenheit", "F"),
        ("K", "K"),
        ("kelvin", "K"),
        ("Pa", "Pa"),
        ("pa", "Pa"),
        ("hPa", "hPa"),
        ("hpa", "hPa"),
        ("kPa", "kPa"),
        ("kpa", "kPa"),
        ("bar", "bar"),
        ("mbar", "mbar"),
        ("psi", "psi"),
        ("W", "W"),
        ("kW", "kW"),
        ("J", "J"),
        ("Wh", "Wh"),
        ("kWh", "kWh"),
        # new ones
        ("μg/m³", "µg/m³"),
        ("ug/m3", "µg/m³"),
        ("µg/m3", "µg/m³"),
        ("m3", "m³"),
        ("l", "L"),
        ("%RH", "%RH"),
        ("/100", "%"),
        ("lux", "lx"),
        ("VAr", "var"),
    ],
)
def test_canonical_names(spelling: str, name: str) -> None:
    assert Conversion(spelling).target.name == name
    assert canonical(spelling) == name
    unit = lookup(spelling)
    assert unit is not None
    assert unit.name == name


# SenML RFC 8428 §12.1 (primary units sensord takes; `C` coulomb and `F` farad are °C and
# °F here) and RFC 8798 (new primary units and the secondary units registry)
# fmt: off
SENML = [
    "m", "kg", "g", "s", "A", "K", "Hz", "Pa", "J", "W", "V", "Ohm", "Cel", "lm", "lx", "m2",
    "m3", "l", "m/s", "m/s2", "m3/s", "l/s", "W/m2", "cd/m2", "bit", "bit/s", "dB", "dBW", "%",
    "%RH", "%EL", "/", "1/s", "1/min", "beat/min", "S/m", "B", "VA", "var", "kg/m3", "deg",
    "ms", "min", "h", "MHz", "kW", "kVA", "kvar", "Ah", "kWh", "KiB", "GB", "Mbit/s", "B/s",
    "MB/s", "mV", "mA", "dBm", "ug/m3", "mm/h", "m/h", "ppm", "/100", "/1000", "hPa", "mm",
    "cm", "km", "km/h",
]
# fmt: on
# Home Assistant, homeassistant/const.py (UnitOf*, PERCENTAGE, LIGHT_LUX, CONCENTRATION_*,
# SIGNAL_STRENGTH_*): µ as U+00B5 in most, μ U+03BC in some (both accepted)
# fmt: off
HOME_ASSISTANT = [
    "°C", "°F", "K", "Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi", "W",
    "kW", "MW", "mW", "BTU/h", "Wh", "kWh", "MWh", "GWh", "mWh", "J", "kJ", "MJ", "GJ", "cal",
    "kcal", "VA", "var", "V", "mV", "µV", "kV", "A", "mA", "µA", "Hz", "kHz", "MHz", "GHz",
    "µg/m³", "μg/m³", "mg/m³", "g/m³", "µg/ft³", "ppm", "ppb", "%", "dBm", "dB", "lx", "m³",
    "ft³", "L", "mL", "gal", "m³/h", "ft³/min", "L/min", "gal/min", "mL/s", "mm", "cm", "m",
    "km", "in", "ft", "yd", "mi", "m²", "cm²", "km²", "ha", "m/s", "km/h", "mph", "kn", "ft/s",
    "mm/h", "in/h", "mm/d", "in/d", "g", "kg", "mg", "µg", "μg", "lb", "oz", "st", "W/m²", "µs",
    "μs", "ms", "s", "min", "h", "d", "°", "µS/cm", "mS/cm", "fl. oz.",
]
# fmt: on


@pytest.mark.parametrize("spelling", sorted(set(SENML + HOME_ASSISTANT)))
def test_senml_and_home_assistant_spellings_are_known(spelling: str) -> None:
    assert lookup(spelling) is not None, spelling
    assert Conversion(spelling).factors(spelling) == (1.0, 0.0)


def test_every_spelling_of_the_table_resolves_in_pint() -> None:
    registry = units.registry()
    seen: set[str] = set()
    for unit in units._TABLE:
        quantity = registry.Quantity(1, unit.pint)  # parses, or raises
        family = units._FAMILIES[unit.family]
        # (compared, not printed: pint cannot format the Fraction exponents of this registry)
        for other in family:
            assert registry.Quantity(1, other.pint).dimensionality == quantity.dimensionality
        conversion = Conversion(unit.name)
        for spelling in (unit.name, *unit.aliases):
            assert spelling not in seen, spelling
            seen.add(spelling)
            assert lookup(spelling) is unit
            assert conversion.factors(spelling) == (1.0, 0.0)
            # every unit of the family converts to this one
            for other in family:
                assert conversion.factors(other.name) is not None, (other.name, unit.name)
    assert seen == set(units.UNITS)


def test_kinds_default_units_are_known() -> None:
    defaults = {u for u in kinds.KINDS.values() if u is not None} - {"lqi"}  # lqi: no unit
    assert {u for u in defaults if lookup(u) is None} == set()


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("C", "kPa"),
        ("C", "furlongs"),
        ("C", ""),
        ("C", "Rankine"),
        ("W", "VA"),  # one dimension in pint, three quantities here
        ("W", "var"),
        ("VA", "var"),
        ("W", "dBm"),  # logarithmic: not a (scale, offset)
        ("dB", "dBm"),
        ("%", "°"),  # all dimensionless in pint
        ("%", "bit"),
        ("%", "dB"),
        ("Hz", "bit/s"),  # both 1/time in pint
        ("m/s", "m/s²"),
        ("kWh", "kW"),
    ],
)
def test_foreign_or_unknown_units_give_none(target: str, source: str) -> None:
    assert Conversion(target).factors(source) is None


def test_unknown_target_names_the_unit_and_lists_the_known_ones() -> None:
    for target in ("Rankine", "c", "degree_Celsius", ""):
        with pytest.raises(ValueError, match="unknown unit") as info:
            Conversion(target)
        message = str(info.value)
        assert repr(target) in message
        assert "known: C, F, K, Pa, hPa" in message
        assert "µg/m³" in message
        assert "docs/formats/units.md" in message
    assert known_units()[:3] == ["C", "F", "K"]
    assert len(known_units()) == len(set(known_units()))


def test_spaces_around_a_unit_are_ignored() -> None:
    conversion = Conversion(" C ")
    assert conversion.target.name == "C"
    assert conversion.factors(" °F ") == conversion.factors("°F")
    assert lookup("\thPa\n") is lookup("hPa")
    assert canonical("Cel") == "C"
    assert canonical("furlongs") == "furlongs"  # unknown: as the device said


def test_factors_are_computed_once_per_pair() -> None:
    Conversion("kPa")
    before = units.pair_factors.cache_info()
    again = Conversion("kpa")  # another spelling of the same target
    after = units.pair_factors.cache_info()
    assert after.misses == before.misses
    assert after.hits >= before.hits + len(units._FAMILIES["pressure"])
    assert again.factors("hPa") == (0.1, 0.0)


@settings(max_examples=200, database=None, deadline=None)
@given(
    family=st.sampled_from(sorted(units._FAMILIES)),
    data=st.data(),
    value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_round_trip(family: str, data: st.DataObject, value: float) -> None:
    members = units._FAMILIES[family]
    a = data.draw(st.sampled_from(members))
    b = data.draw(st.sampled_from(members))
    there = convert(value, a.name, b.name)
    assert math.isfinite(there)
    assert convert(there, b.name, a.name) == pytest.approx(value, rel=1e-9, abs=1e-6)


def test_importing_units_does_not_load_pint() -> None:
    code = (
        "import sys\n"
        "import sensord, sensord.ingest.units as u, sensord.ingest.settings\n"
        "assert u.lookup('Cel') is not None and u.canonical('°C') == 'C' and u.known_units()\n"
        "assert 'pint' not in sys.modules, 'pint imported'\n"
        "u.Conversion('C')\n"
        "assert 'pint' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_docs_list_every_spelling() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "formats" / "units.md").read_text()
    missing = [s for s in units.UNITS if f"`{s}`" not in doc]
    assert missing == []
