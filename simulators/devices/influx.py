"""A Telegraf-like publisher of InfluxDB line protocol: Telegraf's MQTT output in its
"batch" layout, one message of several lines on `telegraf/<host>/<plugin>` (its default
topic `telegraf/{{ .Hostname }}/{{ .PluginName }}`), each line a measurement named after
the kind with one field `value`, the tags `host` (Telegraf's own) and `site`, and a
nanosecond timestamp (Telegraf's default precision):

    temperature,host=room-1,site=plant-1 value=21.5 1800000000000000000

Booleans are line protocol booleans (`value=true`). Telegraf has no availability message
(no last will): birth() and death() send nothing.
"""

from __future__ import annotations

from simulators.devices import Msg, register

BINARY = frozenset({"occupancy", "contact", "water_leak", "smoke", "tamper", "motion"})
PLUGIN = "sensors"


def _escape_tag(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


@register("influx")
class InfluxDevice:
    def __init__(self, device: str, site: str) -> None:
        self.topic = f"telegraf/{device}/{PLUGIN}"
        self.tags = f"host={_escape_tag(device)},site={_escape_tag(site)}"

    def birth(self) -> list[Msg]:
        return []

    def state(self, values: dict[str, float], ts: float) -> list[Msg]:
        ns = round(ts * 1_000_000_000)
        lines = []
        for kind, value in values.items():
            field = ("true" if value else "false") if kind in BINARY else repr(float(value))
            lines.append(f"{_escape_tag(kind)},{self.tags} value={field} {ns}")
        return [(self.topic, "\n".join(lines).encode(), 1, False)]

    def death(self) -> list[Msg]:
        return []
