"""A Shelly Plus H&T (Gen2 firmware) as it publishes over MQTT, topic prefix = its device id.

Both of the firmware's notification channels are on, as on a device whose `rpc_ntf` and
`status_ntf` are set: each report is a `NotifyStatus` on `<id>/events/rpc` (with the
device's `ts`) and the changed components' whole status objects on `<id>/status/<key>`,
retained, so every value arrives twice. `online` is `true` when connected, `false` its
last will (retained both). Honoured kinds: temperature (°C), humidity (%), battery (%);
others are not what an H&T measures and are left out.
Shapes: https://shelly-api-docs.shelly.cloud/gen2/General/Notifications,
https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Temperature, …/Humidity,
…/DevicePower, and https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt.
"""

from __future__ import annotations

import json

from simulators.devices import Msg, register


@register("shelly")
class ShellyPlusHT:
    def __init__(self, device: str, site: str) -> None:
        # a real id is `shellyplusht-<mac>`; the simulator's device name is used as it is
        self.id = device
        self.site = site

    def birth(self) -> list[Msg]:
        return [(f"{self.id}/online", b"true", 1, True)]

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        components: dict[str, dict[str, object]] = {}
        if "temperature" in values:
            t = round(values["temperature"], 1)
            components["temperature:0"] = {"id": 0, "tC": t, "tF": round(t * 9 / 5 + 32, 1)}
        if "humidity" in values:
            components["humidity:0"] = {"id": 0, "rh": round(values["humidity"], 1)}
        if "battery" in values:
            percent = round(values["battery"])
            components["devicepower:0"] = {
                "id": 0,
                # 4 AA cells: about 4.2 V empty to 6 V full
                "battery": {"V": round(4.2 + 1.8 * percent / 100, 2), "percent": percent},
                "external": {"present": False},
            }
        if not components:
            return []
        notify = {
            "src": self.id,
            "dst": f"{self.id}/events",
            "method": "NotifyStatus",
            "params": {"ts": round(ts, 2), **components},
        }
        out: list[Msg] = [(f"{self.id}/events/rpc", _json(notify), 1, False)]
        out += [(f"{self.id}/status/{k}", _json(v), 1, True) for k, v in components.items()]
        return out

    def death(self) -> list[Msg]:
        return [(f"{self.id}/online", b"false", 1, True)]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
