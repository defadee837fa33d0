"""A Zigbee thermometer behind Zigbee2MQTT: an Aqara WSDCGQ11LM (temperature, humidity,
pressure, battery, battery voltage in mV, link quality), as Zigbee2MQTT 2.x publishes it.

- birth: `zigbee2mqtt/bridge/state` `{"state":"online"}` and `zigbee2mqtt/bridge/devices`
  (retained; the device's definition with the exposes and units of its device page,
  https://www.zigbee2mqtt.io/devices/WSDCGQ11LM.html), then `<name>/availability`
  `{"state":"online"}` (retained);
- state: one JSON object on `zigbee2mqtt/<name>` with every value and `last_seen`
  (`advanced.last_seen: ISO_8601`), as in
  https://github.com/Koenkk/zigbee2mqtt/issues/21808: `{"battery":97,"humidity":58.5,
  "linkquality":72,…,"voltage":2995}`. Values are in the device's own units (voltage in mV);
  booleans of the binary kinds (occupancy, contact, …) go out as JSON true/false;
- death: `<name>/availability` `{"state":"offline"}` (retained).
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime

from simulators.devices import Msg, register

BASE = "zigbee2mqtt"
_BINARY = frozenset(
    {
        "battery_low",
        "contact",
        "occupancy",
        "presence",
        "smoke",
        "tamper",
        "vibration",
        "water_leak",
    }
)
_ONLINE = b'{"state":"online"}'
_OFFLINE = b'{"state":"offline"}'


def _numeric(name: str, unit: str, description: str, **extra: object) -> dict[str, object]:
    return {
        "access": 1,
        "description": description,
        "label": name.capitalize(),
        "name": name,
        "property": name,
        "type": "numeric",
        "unit": unit,
        **extra,
    }


# WSDCGQ11LM's exposes, as https://www.zigbee2mqtt.io/devices/WSDCGQ11LM.html lists them
EXPOSES = [
    _numeric("battery", "%", "Remaining battery in %", value_max=100, value_min=0),
    _numeric("temperature", "°C", "Measured temperature value"),
    _numeric("humidity", "%", "Measured relative humidity"),
    _numeric("pressure", "hPa", "The measured atmospheric pressure"),
    _numeric("voltage", "mV", "Voltage of the battery in millivolts"),
    _numeric("linkquality", "lqi", "Link quality (signal strength)", value_max=255, value_min=0),
]


@register("zigbee2mqtt")
class Zigbee2MqttThermometer:
    def __init__(self, device: str, site: str) -> None:
        self.device = device
        self.site = site  # Zigbee2MQTT has no site: sensord's source gives it
        self.topic = f"{BASE}/{device}"
        # a stable IEEE address per friendly name, as a coordinator would have assigned
        self.ieee = f"0x00158d{zlib.crc32(device.encode()):010x}"

    def _devices(self) -> bytes:
        entry = {
            "ieee_address": self.ieee,
            "type": "EndDevice",
            "network_address": 29159,
            "supported": True,
            "friendly_name": self.device,
            "power_source": "Battery",
            "model_id": "lumi.weather",
            "interviewing": False,
            "interview_completed": True,
            "definition": {
                "model": "WSDCGQ11LM",
                "vendor": "Aqara",
                "description": "Temperature, humidity and pressure sensor",
                "exposes": EXPOSES,
                "options": [],
            },
        }
        return json.dumps([entry], ensure_ascii=False, separators=(",", ":")).encode()

    def birth(self) -> list[Msg]:
        return [
            (f"{BASE}/bridge/state", _ONLINE, 0, True),
            (f"{BASE}/bridge/devices", self._devices(), 0, True),
            (f"{self.topic}/availability", _ONLINE, 0, True),
        ]

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        body: dict[str, object] = {}
        for kind, value in values.items():
            if kind in _BINARY:
                body[kind] = value >= 0.5
            elif value == int(value) and kind in {"battery", "voltage", "linkquality"}:
                body[kind] = int(value)
            else:
                body[kind] = value
        # JavaScript's toISOString(), what ISO_8601 last_seen is: milliseconds and "Z"
        when = datetime.fromtimestamp(ts, UTC)
        body["last_seen"] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        return [(self.topic, json.dumps(body, separators=(",", ":")).encode(), 0, False)]

    def death(self) -> list[Msg]:
        return [(f"{self.topic}/availability", _OFFLINE, 0, True)]
