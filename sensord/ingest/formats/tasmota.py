"""Tasmota: `tele/<topic>/SENSOR`, `tele/<topic>/STATE` and `tele/<topic>/LWT` under the
device's FullTopic (docs/formats/tasmota.md).

- SENSOR: one object per physical sensor (`"AM2301": {"Temperature": 24.6, "Humidity":
  58.2}`, `"DS18B20": {…}`, `"ENERGY": {…}`) beside `Time`, `TempUnit`, `PressureUnit`. Each
  numeric field is a reading of its device (the Tasmota `%topic%`) with the sensor's name
  in the label `sensor`, so that two temperature sensors on one board stay two sensors.
- STATE: the useful numbers of the device itself (uptime, heap, load, Wi-Fi signal, Vcc),
  and the relays' `POWER`/`POWERn` as kind `power_state` (1 on, 0 off).
- LWT: `Online`/`Offline` -> kind `online`.

Time: Tasmota's `Time` is local time without a zone. With the `timezone` option (an IANA
name, e.g. "Europe/Berlin") it is read in that zone; without it the receive time is used.
An `Epoch` field (Tasmota's `Time 2`/`Time 3` formats) is UTC and always used.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sensord.events import Reading
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import NO_LABELS, SKIP_NESTED, DeviceFormat
from sensord.ingest.formats._fields import MS_THRESHOLD
from sensord.ingest.kinds import ONLINE
from sensord.ingest.reasons import TOPIC

_OPTIONS = ("full_topic", "tele_prefix", "timezone")
_DEFAULT_FULL_TOPIC = "%prefix%/%topic%/"
_SUFFIXES = ("SENSOR", "STATE", "LWT")
_LWT = {"online": 1.0, "offline": 0.0}
_TOPIC_CACHE = 4096
_EARLIEST = 1_500_000_000.0  # 2017: a `Time` before it is a clock NTP has not set yet

_TEMP = "temp"  # markers: the unit is the message's TempUnit / PressureUnit
_PRESSURE = "pressure"
_TEMP_UNITS = {"C": "°C", "F": "°F", "K": "K"}

# SENSOR fields -> (kind, unit or marker, scale). Units are those of Tasmota's drivers
# (xdrv_03_energy: kWh, W, VA, var, V, A, Hz; Period in Wh; Factor 0..1, given as %).
_FIELDS: dict[str, tuple[str, str | None, float]] = {
    "Temperature": ("temperature", _TEMP, 1.0),
    "DewPoint": ("dew_point", _TEMP, 1.0),
    "Humidity": ("humidity", "%", 1.0),
    "Pressure": ("pressure", _PRESSURE, 1.0),
    # a kind of its own: BME280 sends both, and they are not the same quantity
    "SeaPressure": ("sea_pressure", _PRESSURE, 1.0),
    "Illuminance": ("illuminance", "lx", 1.0),
    "CarbonDioxide": ("co2", "ppm", 1.0),
    "eCO2": ("co2", "ppm", 1.0),
    "TVOC": ("voc", "ppb", 1.0),
    "Gas": ("gas_resistance", "kΩ", 1.0),  # BME680: the sensor's resistance
    "Distance": ("distance", "cm", 1.0),
    "PM1": ("pm1", "µg/m³", 1.0),
    "PM2.5": ("pm25", "µg/m³", 1.0),
    "PM10": ("pm10", "µg/m³", 1.0),
    "Total": ("energy", "kWh", 1.0),
    "Today": ("energy_today", "kWh", 1.0),
    "Yesterday": ("energy_yesterday", "kWh", 1.0),
    "Period": ("energy_period", "Wh", 1.0),
    "Power": ("power", "W", 1.0),
    "ApparentPower": ("apparent_power", "VA", 1.0),
    "ReactivePower": ("reactive_power", "var", 1.0),
    "Factor": ("power_factor", "%", 100.0),
    "Voltage": ("voltage", "V", 1.0),
    "Current": ("current", "A", 1.0),
    "Frequency": ("frequency", "Hz", 1.0),
}
# top-level SENSOR keys that are no sensor, and sensor fields that are no value: skipped
# without being counted (documented)
_SENSOR_META = frozenset({"Time", "Epoch", "TempUnit", "PressureUnit", "SpeedUnit"})
_FIELD_META = frozenset({"Id", "TotalStartTime"})
# STATE: the numbers worth a reading; the rest (text, Wi-Fi names, sleep settings) is
# status, not telemetry, and is left out without being counted
_STATE_FIELDS: dict[str, tuple[str, str | None, str]] = {
    "UptimeSec": ("uptime", "s", ""),
    "Heap": ("heap", "kB", ""),
    "LoadAvg": ("load_avg", None, ""),
    "MqttCount": ("mqtt_count", None, ""),
    "Vcc": ("voltage", "V", "Vcc"),
    "Dimmer": ("dimmer", "%", ""),
}
_WIFI_FIELDS: dict[str, tuple[str, str | None]] = {
    "RSSI": ("wifi_quality", "%"),  # Tasmota's RSSI is a 0..100 quality, not dBm
    "Signal": ("signal_strength", "dBm"),
    "LinkCount": ("wifi_link_count", None),
}
_POWER_STATE = "power_state"


def _topic_pattern(full_topic: str, prefix: str) -> re.Pattern[str]:
    parts = re.split(r"(%prefix%|%topic%|%hostname%|%id%)", full_topic)
    out = []
    for part in parts:
        if part == "%prefix%":
            out.append(re.escape(prefix))
        elif part == "%topic%":
            out.append("(?P<topic>.+)")
        elif part in {"%hostname%", "%id%"}:
            out.append("[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "(?P<suffix>[^/]+)$")


@register("tasmota")
class TasmotaFormat(DeviceFormat):
    name = "tasmota"
    default_topics: tuple[str, ...] = ("tele/+/SENSOR", "tele/+/STATE", "tele/+/LWT")

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown tasmota option; known: {', '.join(_OPTIONS)}")
        full = self.options.get("full_topic", _DEFAULT_FULL_TOPIC)
        if not isinstance(full, str) or full.count("%topic%") != 1:
            raise ValueError("full_topic: must contain %topic% once, e.g. '%prefix%/%topic%/'")
        if any(c in full for c in "#+"):
            raise ValueError("full_topic: must not contain MQTT wildcards (# or +)")
        if not full.endswith("/"):
            full += "/"  # as Tasmota itself does
        prefix = self.options.get("tele_prefix", "tele")
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/#+"):
            raise ValueError("tele_prefix: must be one topic level, e.g. 'tele'")
        zone = self.options.get("timezone")
        self.zone: ZoneInfo | None = None
        if zone is not None:
            if not isinstance(zone, str):
                raise ValueError("timezone: must be an IANA time zone name, e.g. 'Europe/Berlin'")
            try:
                self.zone = ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone: unknown time zone {zone[:60]!r}") from None
        self.full_topic = full
        self._pattern = _topic_pattern(full, prefix)
        filters = full.replace("%prefix%", prefix)
        for token in ("%topic%", "%hostname%", "%id%"):
            filters = filters.replace(token, "+")
        topics = tuple(filters + suffix for suffix in _SUFFIXES)
        if topics != type(self).default_topics:
            self.default_topics = topics  # derived from full_topic
        self._topics: dict[str, tuple[str, str]] = {}  # topic -> (device, suffix)
        self._time_text = ""  # the last `Time` parsed and its epoch (SENSOR and STATE share it)
        self._time_ts = 0.0

    # ---- the hot path

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        found = self._topics.get(topic)
        if found is None:
            match = self._pattern.match(topic)
            if match is None:
                raise self.error(
                    f"topic {topic[:80]!r} does not match full_topic {self.full_topic!r}", TOPIC
                )
            found = (match["topic"], match["suffix"])
            if len(self._topics) >= _TOPIC_CACHE:
                self._topics.clear()
            self._topics[topic] = found
        device, suffix = found
        if suffix == "SENSOR":
            data = self.json_object(payload)
            return self._sensor(device, data, self._time(data, now))
        if suffix == "STATE":
            data = self.json_object(payload)
            return self._state(device, data, self._time(data, now))
        if suffix == "LWT":
            self.check_size(payload)
            value = _LWT.get(payload.decode("utf-8", "replace").strip().lower())
            if value is None:
                raise self.error(f"LWT of {device[:80]!r}: expected Online or Offline")
            return [Reading.trusted(self.site, device, ONLINE, value, now, NO_LABELS, None)]
        return []  # INFO1, RESULT, HASS_STATE …: nothing to read

    def _time(self, data: dict[str, object], now: float) -> float:
        epoch = data.get("Epoch")
        if isinstance(epoch, int | float) and not isinstance(epoch, bool):
            ts = float(epoch)
            if not math.isfinite(ts):
                return now
            if ts > MS_THRESHOLD:
                ts /= 1000.0
        else:
            text = data.get("Time")
            if not isinstance(text, str):
                return now
            if text == self._time_text:
                ts = self._time_ts
            else:
                try:
                    dt = datetime.fromisoformat(text)
                except ValueError:
                    return now
                if dt.tzinfo is None:
                    if self.zone is None:
                        return now
                    dt = dt.replace(tzinfo=self.zone)
                ts = dt.timestamp()
                self._time_text, self._time_ts = text, ts
        if ts < _EARLIEST or self.ahead(ts, now):
            return now
        return ts

    def _sensor(self, device: str, data: dict[str, object], ts: float) -> list[Reading]:
        temp = data.get("TempUnit")
        temp_unit = _TEMP_UNITS.get(temp, "°C") if isinstance(temp, str) else "°C"
        pressure = data.get("PressureUnit")
        pressure_unit = pressure if isinstance(pressure, str) and pressure else "hPa"
        out: list[Reading] = []
        for key, raw in data.items():
            if key in _SENSOR_META:
                continue
            if isinstance(raw, dict):
                self._fields(device, key, raw, ts, temp_unit, pressure_unit, out, nested=True)
                continue
            value = self.value(raw)
            if value is None:
                continue
            if key.startswith("Switch") and key[6:].isdigit():
                # a switch input's state, "Switch1": "ON"
                kind, labels = "switch", self.labels(key)
            else:
                kind, labels = self.kind(key), NO_LABELS
            reading = self.reading(device, kind, value, ts, None, labels)
            if reading is not None:
                out.append(reading)
        return out

    def _fields(  # noqa: PLR0917 - the message's units, passed down as they are
        self,
        device: str,
        sensor: str,
        fields: dict[str, object],
        ts: float,
        temp_unit: str,
        pressure_unit: str,
        out: list[Reading],
        nested: bool,
    ) -> None:
        labels = self.labels(sensor)
        for field, raw in fields.items():
            if field in _FIELD_META:
                continue
            if isinstance(raw, dict):
                if nested:  # a sensor inside a sensor, e.g. ENERGY's "BL09XX": {Temperature}
                    self._fields(device, field, raw, ts, temp_unit, pressure_unit, out, False)
                else:
                    self.skip(SKIP_NESTED)
                continue
            plan = _FIELDS.get(field)
            if plan is None:
                kind, unit, scale = self.kind(field), None, 1.0
            else:
                kind, unit, scale = plan
                if unit == _TEMP:
                    unit = temp_unit
                elif unit == _PRESSURE:
                    unit = pressure_unit
            if isinstance(raw, list):
                # one value per channel (a dual meter's "Power": [52, 5]): sensor ENERGY1, …
                for i, item in enumerate(raw):
                    value = self.value(item)
                    if value is None:
                        continue
                    if scale != 1.0:
                        value = round(value * scale, 9)
                    one = self.reading(
                        device, kind, value, ts, unit, self.labels(f"{sensor}{i + 1}")
                    )
                    if one is not None:
                        out.append(one)
                continue
            value = self.value(raw)
            if value is None:
                continue
            if scale != 1.0:
                value = round(value * scale, 9)  # Factor 0.29 -> 29.0, not 28.999999999999996
            reading = self.reading(device, kind, value, ts, unit, labels)
            if reading is not None:
                out.append(reading)

    def _state(self, device: str, data: dict[str, object], ts: float) -> list[Reading]:
        out: list[Reading] = []
        for key, raw in data.items():
            plan = _STATE_FIELDS.get(key)
            if plan is not None:
                kind, unit, sensor = plan
                labels = self.labels(sensor)
            elif key.startswith("POWER") and (len(key) == 5 or key[5:].isdigit()):
                kind, unit, labels = _POWER_STATE, None, self.labels(key[5:] and key)
            elif key == "Wifi" and isinstance(raw, dict):
                self._wifi(device, raw, ts, out)
                continue
            else:
                continue
            value = self.value(raw)
            if value is None:
                continue
            reading = self.reading(device, kind, value, ts, unit, labels)
            if reading is not None:
                out.append(reading)
        return out

    def _wifi(self, device: str, wifi: dict[str, object], ts: float, out: list[Reading]) -> None:
        for key, (kind, unit) in _WIFI_FIELDS.items():
            if key not in wifi:
                continue
            value = self.value(wifi[key])
            if value is None:
                continue
            reading = self.reading(device, kind, value, ts, unit)
            if reading is not None:
                out.append(reading)


__all__ = ["TasmotaFormat"]
