"""A Tasmota board with an AM2301 and a DS18B20 and a power monitor (ENERGY), topic
`<device>`, FullTopic `%prefix%/%topic%/`, as Tasmota publishes it.

- birth: `tele/<topic>/LWT` `Online` (retained) and `tele/<topic>/INFO1`;
- state: `tele/<topic>/STATE` (uptime, heap, load, relay `POWER`, Wi-Fi) then
  `tele/<topic>/SENSOR`, shaped as the examples of https://tasmota.github.io/docs/AM2301/,
  https://tasmota.github.io/docs/DS18x20/ and the ENERGY object of the power-monitoring
  drivers. `temperature` goes to both sensors (the DS18B20 probe sits beside the AM2301),
  `humidity` and `dew_point` to the AM2301; `energy` is ENERGY's `Total`, `power_factor`
  (in %) its `Factor` (0..1); `power_state` the relay (POWER ON/OFF). `Time` is the board's
  local time without a zone, the board's zone being UTC: sensord reads it with
  `timezone = "UTC"`, and uses the receive time without that option;
- death: `tele/<topic>/LWT` `Offline` (retained), the will the broker publishes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from simulators.devices import Msg, register

_ENERGY = {
    "energy": "Total",
    "energy_today": "Today",
    "energy_yesterday": "Yesterday",
    "power": "Power",
    "apparent_power": "ApparentPower",
    "reactive_power": "ReactivePower",
    "voltage": "Voltage",
    "current": "Current",
}


@register("tasmota")
class TasmotaBoard:
    def __init__(self, device: str, site: str) -> None:
        self.device = device
        self.site = site  # Tasmota has no site: sensord's source gives it
        self.tele = f"tele/{device}/"
        self.started: float | None = None

    def birth(self) -> list[Msg]:
        info = {
            "Info1": {
                "Module": "Generic",
                "Version": "13.1.0(tasmota)",
                "FallbackTopic": f"cmnd/DVES_{self.device[-6:].upper()}_fb/",
                "GroupTopic": "cmnd/tasmotas/",
            }
        }
        return [
            (self.tele + "LWT", b"Online", 1, True),
            (self.tele + "INFO1", json.dumps(info, separators=(",", ":")).encode(), 0, False),
        ]

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        if self.started is None:
            self.started = ts
        when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        uptime = int(ts - self.started)
        state = {
            "Time": when,
            "Uptime": f"{uptime // 86400}T{uptime % 86400 // 3600:02d}:{uptime % 3600 // 60:02d}"
            f":{uptime % 60:02d}",
            "UptimeSec": uptime,
            "Heap": 26,
            "SleepMode": "Dynamic",
            "Sleep": 50,
            "LoadAvg": 19,
            "MqttCount": 1,
            "POWER": "ON" if values.get("power_state", 1.0) >= 0.5 else "OFF",
            "Wifi": {
                "AP": 1,
                "SSId": "sensord-sim",
                "BSSId": "30:23:03:84:B0:20",
                "Channel": 6,
                "Mode": "11n",
                "RSSI": 78,
                "Signal": -61,
                "LinkCount": 1,
                "Downtime": "0T00:00:05",
            },
        }
        sensor: dict[str, object] = {"Time": when}
        am2301: dict[str, object] = {}
        if "temperature" in values:
            am2301["Temperature"] = values["temperature"]
        if "humidity" in values:
            am2301["Humidity"] = values["humidity"]
        if "dew_point" in values:
            am2301["DewPoint"] = values["dew_point"]
        if am2301:
            sensor["AM2301"] = am2301
        if "temperature" in values:
            sensor["DS18B20"] = {"Id": "01191ED79AFF", "Temperature": values["temperature"]}
        energy: dict[str, object] = {}
        for kind, field in _ENERGY.items():
            if kind in values:
                energy[field] = values[kind]
        if "power_factor" in values:
            energy["Factor"] = round(values["power_factor"] / 100.0, 4)
        if energy:
            sensor["ENERGY"] = {"TotalStartTime": "2024-01-01T00:00:00", **energy}
        sensor["TempUnit"] = "C"
        return [
            (self.tele + "STATE", json.dumps(state, separators=(",", ":")).encode(), 0, False),
            (self.tele + "SENSOR", json.dumps(sensor, separators=(",", ":")).encode(), 0, False),
        ]

    def death(self) -> list[Msg]:
        return [(self.tele + "LWT", b"Offline", 1, True)]
