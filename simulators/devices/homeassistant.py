"""A device announcing itself by Home Assistant MQTT discovery, as ESPHome or a DIY
firmware does (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): two
retained sensor configs (temperature, humidity) with abbreviated keys and a `~` base topic,
sharing one JSON state topic told apart by their `value_template`s, and an availability
topic (`online` retained at birth; `offline` as its last will at death).

Discovery names no site: the source's `site` gives it (the `site` argument is unused).
"""

from __future__ import annotations

import json
import re

from simulators.devices import Msg, register

PREFIX = "homeassistant"

# the sensors the device announces: kind -> (object id, unit)
SENSORS = {"temperature": ("temperature", "°C"), "humidity": ("humidity", "%")}


@register("homeassistant")
class HomeAssistantDevice:
    def __init__(self, device: str, site: str) -> None:
        self.device = device
        self.site = site
        # node ids and object ids are [a-zA-Z0-9_-] (the discovery topic's rule)
        self.node = re.sub(r"[^a-zA-Z0-9_-]", "_", device)
        self.base = f"sensord-sim/{self.node}"

    def config_topic(self, kind: str) -> str:
        return f"{PREFIX}/sensor/{self.node}/{SENSORS[kind][0]}/config"

    def birth(self) -> list[Msg]:
        out: list[Msg] = []
        for kind, (object_id, unit) in SENSORS.items():
            config = {
                "~": self.base,
                "name": kind.capitalize(),
                "uniq_id": f"{self.node}_{object_id}",
                "obj_id": f"{self.node}_{object_id}",
                "dev_cla": kind,
                "stat_cla": "measurement",
                "unit_of_meas": unit,
                "stat_t": "~/state",
                "val_tpl": f"{{{{ value_json.{kind} }}}}",
                "avty_t": "~/status",
                "pl_avail": "online",
                "pl_not_avail": "offline",
                "dev": {
                    "ids": [self.node],
                    "name": self.device,
                    "mf": "sensord",
                    "mdl": "sensord-sim",
                    "sw": "1.0",
                },
            }
            out.append((self.config_topic(kind), json.dumps(config).encode(), 1, True))
        out.append((f"{self.base}/status", b"online", 1, True))
        return out

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        # one JSON object for every sensor, as one sensor chip's read-out (Home Assistant
        # discovery carries no time: the receive time is the reading's)
        body = {kind: values[kind] for kind in SENSORS if kind in values}
        return [(f"{self.base}/state", json.dumps(body).encode(), 1, False)]

    def death(self) -> list[Msg]:
        return [(f"{self.base}/status", b"offline", 1, True)]

    def forget(self) -> list[Msg]:
        """Empty retained configs: the device is removed from discovery."""
        return [(self.config_topic(kind), b"", 1, True) for kind in SENSORS]
