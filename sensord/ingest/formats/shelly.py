"""Shelly Gen2/Gen3 devices over MQTT (the RPC firmware): format "shelly".

A Shelly publishes under its `mqtt.topic_prefix` (by default its device id, e.g.
`shellyplusht-08b61fcb7f3c`; a user may set one with `/` in it, e.g. `shellies/kitchen`):

- `<prefix>/events/rpc`: JSON-RPC notifications. `NotifyStatus` (the changed part of some
  components' status) and `NotifyFullStatus` (every component) carry
  `params: {"ts": <epoch s>, "<component>[:<id>]": {status}, …}`; `NotifyEvent` (button
  pushes, config changes) carries no measurement and gives `[]`;
- `<prefix>/status/<component>[:<id>]`: one component's whole status object (`status_ntf`);
- `<prefix>/online`: `true` / `false` (the last will): a reading of kind `online`.

Topics are read from the right (`…/events/rpc`, `…/status/<key>`, `…/online`), so the
prefix may hold `/`. Identity: device = the topic prefix (the device id unless the user
set a prefix of their own: then the same name for all three topics, which the payload's
`src` would not give), label `sensor` = the component key (`temperature:0`, `switch:1`,
`em:0/a` for a phase of a three-phase meter), on every reading, so that two add-on probes
or two relays stay two sensors and a new one never renames the others.

Only the status fields of `_FIELDS` (and the nested ones of `_NESTED`) are read; the rest
(ids, `output`, `source`, timers, `by_minute`, `sys` counters …) are state or bookkeeping,
not measurements, and are ignored without being counted. A field of the table that is
null, text or not finite is skipped and counted. docs/formats/shelly.md has the table.
"""

from __future__ import annotations

import math

from sensord.events import Reading
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import SKIP_NESTED, SKIP_TEXT, DeviceFormat
from sensord.ingest.formats._prefix import topic_prefixes
from sensord.ingest.kinds import ONLINE

# status field -> (kind, unit, scale); Shelly's documented units (Wh for energy, a ratio for
# the power factor, which is given in % as Home Assistant's power_factor device class)
_FIELDS: dict[str, tuple[str, str | None, float]] = {
    "tC": ("temperature", "°C", 1.0),
    "rh": ("humidity", "%", 1.0),
    "lux": ("illuminance", "lx", 1.0),
    "apower": ("power", "W", 1.0),
    "act_power": ("power", "W", 1.0),
    "aprt_power": ("apparent_power", "VA", 1.0),
    "voltage": ("voltage", "V", 1.0),
    "current": ("current", "A", 1.0),
    "freq": ("frequency", "Hz", 1.0),
    "pf": ("power_factor", "%", 100.0),
    "rssi": ("signal_strength", "dBm", 1.0),
    "total_act_energy": ("energy", "Wh", 1.0),  # em1data, emdata (per phase: a_…)
    "total_act_ret_energy": ("returned_energy", "Wh", 1.0),
    "total_act": ("energy", "Wh", 1.0),  # emdata, all phases
    "total_act_ret": ("returned_energy", "Wh", 1.0),
}
# nested status objects: field -> {inner field -> (kind, unit, scale)}
_NESTED: dict[str, dict[str, tuple[str, str | None, float]]] = {
    "aenergy": {"total": ("energy", "Wh", 1.0)},
    "ret_aenergy": {"total": ("returned_energy", "Wh", 1.0)},
    "temperature": {"tC": ("temperature", "°C", 1.0)},  # a relay's or meter's own sensor
    "battery": {"percent": ("battery", "%", 1.0), "V": ("voltage", "V", 1.0)},
    "external": {"present": ("external_power", None, 1.0)},  # devicepower: on mains
}
# (component type, field) -> kind, for booleans whose meaning depends on the component
_TYPED: dict[tuple[str, str], str] = {
    ("smoke", "alarm"): "smoke",
    ("flood", "alarm"): "water_leak",
}
_PHASES = frozenset("abcn")  # em / emdata fields a_…, b_…, c_…, n_…

_NOTIFY = frozenset({"NotifyStatus", "NotifyFullStatus"})
_ONLINE_WORDS = {b"true": 1.0, b"false": 0.0}
_CLOCK_SET = 946_684_800.0  # 2000-01-01: an earlier ts is a clock not set since boot
_CACHE = 4096  # component keys per format: bounded, they come from the wire

_KNOWN_OPTIONS = ("topic_prefix",)


@register("shelly")
class ShellyFormat(DeviceFormat):
    """Shelly Gen2/Gen3 RPC notifications, status topics and `online`."""

    name = "shelly"
    default_topics: tuple[str, ...] = ("+/events/rpc", "+/status/+", "+/online")

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(_KNOWN_OPTIONS))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown option of format shelly; known: {', '.join(_KNOWN_OPTIONS)}"
            )
        prefixes = topic_prefixes(self.options.get("topic_prefix"))
        if prefixes:
            # the instance's own default filters (the bridge reads default_topics by getattr)
            topics = tuple(
                f"{p}/{t}" for p in prefixes for t in ("events/rpc", "status/+", "online")
            )
            self.default_topics = topics
        # component key -> (component type, the sensor label); bounded
        self._components: dict[str, tuple[str, dict[str, str]]] = {}

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if topic.endswith("/events/rpc"):
            device = topic[:-11]
            if not device:
                raise self.error(f"topic {topic[:80]!r} has no device prefix", "topic")
            data = self.json_object(payload)
            method = data.get("method")
            if not isinstance(method, str) or method not in _NOTIFY:
                if isinstance(method, str) or (
                    method is None and ("result" in data or "error" in data)
                ):
                    return []  # NotifyEvent, other notifications, RPC responses: no reading
                raise self.error("an RPC notification must have a string 'method'")
            params = data.get("params")
            if not isinstance(params, dict):
                raise self.error(f"{method} has no 'params' object")
            raw_ts = params.get("ts")
            if raw_ts is None:
                ts = now
            elif isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool):
                try:
                    ts = float(raw_ts)
                except OverflowError:  # an integer too large for a double
                    ts = math.inf
                if not math.isfinite(ts):
                    raise self.error("params.ts is not a finite number")
                if ts < _CLOCK_SET:
                    ts = now  # the device's clock was not set yet (no SNTP since boot)
                elif self.ahead(ts, now):
                    return []
            else:
                raise self.error("params.ts must be epoch seconds")
            out: list[Reading] = []
            for key, status in params.items():
                if key != "ts" and isinstance(status, dict):
                    self._component(out, device, key, status, ts)
            return out
        head, sep, key = topic.rpartition("/")
        if key == "online" and sep:
            if not head:
                raise self.error(f"topic {topic[:80]!r} has no device prefix", "topic")
            self.check_size(payload)
            value = _ONLINE_WORDS.get(bytes(payload.strip()))
            if value is None:
                raise self.error("online payload must be true or false")
            return [Reading.trusted(self.site, head, ONLINE, value, now, {}, None)]
        if head.endswith("/status") and key:
            device = head[:-7]
            if not device:
                raise self.error(f"topic {topic[:80]!r} has no device prefix", "topic")
            status = self.json_object(payload)
            out = []
            self._component(out, device, key, status, now)
            return out
        raise self.error(
            f"topic {topic[:80]!r} is none of <prefix>/events/rpc, /status/<component>, /online",
            "topic",
        )

    def _component(
        self, out: list[Reading], device: str, key: str, status: dict[str, object], ts: float
    ) -> None:
        """Append the readings of one component's status object (`key` e.g. `switch:0`)."""
        found = self._components.get(key)
        if found is None:
            found = (key.partition(":")[0], self.labels(key))
            if len(self._components) < _CACHE:
                self._components[key] = found
        ctype, labels = found
        for field, raw in status.items():
            spec = _FIELDS.get(field)
            if spec is not None:
                self._add(out, device, spec, raw, ts, labels)
                continue
            inner = _NESTED.get(field)
            if inner is not None:
                if isinstance(raw, dict):
                    for sub, spec in inner.items():
                        if sub in raw:
                            self._add(out, device, spec, raw[sub], ts, labels)
                elif field == "battery" and raw is not None:
                    # BTHome devices give the battery as a bare percentage
                    self._add(out, device, inner["percent"], raw, ts, labels)
                elif raw is None:
                    self.value(raw)  # counted as null
                else:
                    self.skip(SKIP_NESTED)
                continue
            typed = _TYPED.get((ctype, field))
            if typed is not None:
                self._add(out, device, (typed, None, 1.0), raw, ts, labels)
                continue
            if ctype.startswith("em") and field[1:2] == "_":
                # three-phase meters: a_act_power, b_voltage, n_current, a_total_act_energy …
                spec = _FIELDS.get(field[2:])
                if spec is not None and field[0] in _PHASES:
                    self._add(out, device, spec, raw, ts, self.labels(f"{key}/{field[0]}"))
            elif ctype.startswith("em") and field.startswith("total_"):
                spec = _FIELDS.get(field[6:])  # total_current, total_act_power …: the sum
                if spec is not None:
                    self._add(out, device, spec, raw, ts, labels)

    def _add(  # noqa: PLR0917 - positional on purpose: per field, the hot path
        self,
        out: list[Reading],
        device: str,
        spec: tuple[str, str | None, float],
        raw: object,
        ts: float,
        labels: dict[str, str],
    ) -> None:
        if isinstance(raw, str):
            self.skip(SKIP_TEXT)  # Shelly sends numbers; a text here is no measurement
            return
        value = self.value(raw)
        if value is None:
            return
        kind, unit, scale = spec
        if unit is None:
            out.append(Reading.trusted(self.site, device, kind, value, ts, labels, None))
            return
        reading = self.reading(device, kind, value * scale, ts, unit, labels)
        if reading is not None:
            out.append(reading)
