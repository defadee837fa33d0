"""Kinds shared by every ecosystem: a temperature is kind `temperature` whether it came from
Zigbee2MQTT, Tasmota, Shelly, ESPHome, Home Assistant or Sparkplug, so that one rule
`match: {kind: temperature}` covers them all.

The names follow Home Assistant's sensor and binary-sensor device classes
(https://developers.home-assistant.io/docs/core/entity/sensor/#available-device-classes,
…/binary-sensor/#available-device-classes), with their usual units. A format maps its own
field names to these with `kind_of(name)` (its own table first, where its firmware spells a
field its own way); a field no table knows keeps its name, made snake_case.
"""

from __future__ import annotations

import re

# kind -> the unit Home Assistant uses for it by default (what a reading without a unit of
# its own is taken to be in, where the ecosystem documents it)
KINDS: dict[str, str | None] = {
    "apparent_power": "VA",
    "aqi": None,
    "battery": "%",
    "carbon_monoxide": "ppm",
    "co2": "ppm",
    "current": "A",
    "dew_point": "°C",
    "distance": "m",
    "energy": "kWh",
    "frequency": "Hz",
    "gas": "m³",
    "humidity": "%",
    "illuminance": "lx",
    "linkquality": "lqi",
    "moisture": "%",
    "nitrogen_dioxide": "µg/m³",
    "ozone": "µg/m³",
    "pm1": "µg/m³",
    "pm10": "µg/m³",
    "pm25": "µg/m³",
    "power": "W",
    "power_factor": "%",
    "pressure": "hPa",
    "reactive_power": "var",
    "returned_energy": "kWh",  # energy fed back to the grid (Shelly ret_aenergy, Tasmota Export)
    "signal_strength": "dBm",
    "sound_pressure": "dB",
    "speed": "m/s",
    "temperature": "°C",
    "voc": "µg/m³",
    "voltage": "V",
    "volume": "L",
    "water": "L",
    "weight": "kg",
    "wind_speed": "m/s",
}

# Booleans that matter for alerting: 1 when the state the name says holds (occupied, leak,
# smoke, tampered, online), 0 otherwise. `contact` is 1 when closed, as Zigbee2MQTT's
# `contact: true` and Home Assistant's door sensor "off" (closed) say; docs/sources.md.
BINARY_KINDS = frozenset(
    {
        "battery_low",
        "contact",
        "gas_detected",
        "moisture_detected",
        "motion",
        "occupancy",
        "online",
        "presence",
        "problem",
        "smoke",
        "tamper",
        "vibration",
        "water_leak",
    }
)

ONLINE = "online"  # availability: 1 online, 0 offline, one per device

# other spellings of the kinds above, after snake_case (see `snake`)
ALIASES: dict[str, str] = {
    "temp": "temperature",
    "temperature_c": "temperature",
    "local_temperature": "temperature",
    "device_temperature": "temperature",
    "hum": "humidity",
    "relative_humidity": "humidity",
    "rh": "humidity",
    "dewpoint": "dew_point",
    "press": "pressure",
    "baro": "pressure",
    "sea_pressure": "pressure",
    "lux": "illuminance",
    "illuminance_lux": "illuminance",
    "light": "illuminance",
    "carbon_dioxide": "co2",
    "atmospheric_pressure": "pressure",
    "eco2": "co2",
    "e_co2": "co2",
    "pm2_5": "pm25",
    "pm2.5": "pm25",
    "pm_2_5": "pm25",
    "pm1_0": "pm1",
    "pm_10": "pm10",
    "tvoc": "voc",
    "volatile_organic_compounds": "voc",
    "volatile_organic_compounds_parts": "voc",
    "factor": "power_factor",
    "apower": "power",
    "active_power": "power",
    "total": "energy",
    "batt": "battery",
    "battery_percent": "battery",
    "rssi": "signal_strength",
    "leak": "water_leak",
    "water_leak_detected": "water_leak",
    "door": "contact",
    "window": "contact",
    "opening": "contact",
    "tampered": "tamper",
    "smoke_detected": "smoke",
    "occupied": "occupancy",
    "availability": ONLINE,
    "connectivity": ONLINE,
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9.]+")


def snake(name: str) -> str:
    """`CarbonDioxide` -> `carbon_dioxide`, `PM2.5` -> `pm2.5`, `Temperature` -> `temperature`."""
    return _NON_WORD.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


def kind_of(name: str, own: dict[str, str] | None = None) -> str:
    """The shared kind of a field name: the format's `own` table (exact spelling) first,
    then the aliases; a name no table knows keeps its snake_case spelling."""
    if own is not None:
        found = own.get(name)
        if found is not None:
            return found
    s = snake(name)
    return ALIASES.get(s, s)
