"""An ESPHome node with a temperature and a humidity sensor and a door binary_sensor, as its
`mqtt:` component publishes them (topic_prefix = the node's name, retain on, discovery on).

birth: `<node>/status` `online` (retained) and the Home Assistant discovery configs,
retained, with ESPHome's abbreviated keys (esphome/components/mqtt/mqtt_component.cpp
`send_discovery_`, mqtt_sensor.cpp); state: one retained message per sensor,
`<node>/sensor/<object_id>/state` (the value with the sensor's accuracy_decimals, `nan`
for none) and `<node>/binary_sensor/door/state` `ON` (open) / `OFF`; death: `offline`,
the last will. Honoured kinds: temperature (°C), humidity (%), contact (1 = closed, so
`OFF`). https://esphome.io/components/mqtt.html
"""

from __future__ import annotations

import json
import math

from simulators.devices import Msg, register

_SENSORS = (
    # (kind, object_id, name, unit, device class, accuracy_decimals)
    ("temperature", "temperature", "Temperature", "°C", "temperature", 1),
    ("humidity", "humidity", "Humidity", "%", "humidity", 0),
)
_MAC = "a4cf12d3e4f5"


@register("esphome")
class EsphomeNode:
    def __init__(self, device: str, site: str) -> None:
        self.node = device
        self.site = site

    def _device_info(self) -> dict[str, str]:
        return {
            "ids": _MAC,
            "name": self.node,
            "sw": "esphome v2024.6.4 Jul  1 2024, 10:00:00",
            "mdl": "esp32dev",
            "mf": "espressif",
            "sa": "",
        }

    def birth(self) -> list[Msg]:
        node = self.node
        out: list[Msg] = [(f"{node}/status", b"online", 1, True)]
        for _, object_id, name, unit, device_class, _ in _SENSORS:
            config = {
                "dev_cla": device_class,
                "unit_of_meas": unit,
                "stat_cla": "measurement",
                "name": name,
                "stat_t": f"{node}/sensor/{object_id}/state",
                "avty_t": f"{node}/status",
                "uniq_id": f"ESPsensor{object_id}",
                "dev": self._device_info(),
            }
            topic = f"homeassistant/sensor/{node}/{object_id}/config"
            out.append((topic, _json(config), 1, True))
        door = {
            "dev_cla": "door",
            "name": "Door",
            "stat_t": f"{node}/binary_sensor/door/state",
            "avty_t": f"{node}/status",
            "uniq_id": "ESPbinary_sensordoor",
            "dev": self._device_info(),
        }
        out.append((f"homeassistant/binary_sensor/{node}/door/config", _json(door), 1, True))
        return out

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        out: list[Msg] = []
        for kind, object_id, _, _, _, decimals in _SENSORS:
            if kind in values:
                v = values[kind]
                text = "nan" if not math.isfinite(v) else f"{v:.{decimals}f}"
                out.append((f"{self.node}/sensor/{object_id}/state", text.encode(), 1, True))
        if "contact" in values:
            word = b"OFF" if values["contact"] >= 0.5 else b"ON"  # closed -> OFF
            out.append((f"{self.node}/binary_sensor/door/state", word, 1, True))
        return out

    def death(self) -> list[Msg]:
        return [(f"{self.node}/status", b"offline", 1, True)]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
