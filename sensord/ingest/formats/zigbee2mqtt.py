"""Zigbee2MQTT: `<base_topic>/<friendly_name>` JSON objects, one reading per numeric or
boolean field (docs/formats/zigbee2mqtt.md).

- `<base>/<name>`: the device's state, e.g. `{"temperature": 22.4, "humidity": 58.5,
  "voltage": 2995, "linkquality": 72}`; the friendly name may contain `/`.
- `<base>/<name>/availability`: `online`/`offline`, or `{"state": "online"}` (Zigbee2MQTT
  2.x, or 1.x with `legacy_availability_payload: false`) -> kind `online`.
- `<base>/bridge/devices` (retained): the device list with each definition's `exposes`;
  learned per (device, property): the unit, the kind from the expose's `name` (so that an
  endpoint's `temperature_l1` is kind `temperature`, label `sensor` = `l1`) and the words of
  string-valued binaries (`value_on`/`value_off`). Every other `bridge/…` topic, and the
  command topics `<name>/set[/…]`, `<name>/get[/…]`, carry nothing to read: `[]`.

Zigbee2MQTT's `voltage` is the battery's in mV on battery devices and the mains' in V on
plugs (both under the one property name); `bridge/devices` says which. Until it has been
seen, a `voltage` above 400 is taken as mV (no home mains reads 400 V; no battery reads
0.4 V).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple

from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import NO_LABELS, DeviceFormat
from sensord.ingest.formats._fields import MS_THRESHOLD
from sensord.ingest.kinds import ONLINE
from sensord.ingest.reasons import TOPIC

_OPTIONS = ("base_topic",)
_AVAILABILITY = "availability"
_COMMANDS = frozenset({"set", "get"})
_AVAILABLE = {"online": 1.0, "offline": 0.0}
# keys of a state object that are no sensor's value, skipped without being counted:
# `last_seen` is the readings' time, `color` a light's setting (an object), `device` the
# `include_device_information` block, `elapsed` Zigbee2MQTT's ms since the last message
_IGNORED = frozenset({"last_seen", "color", "device", "elapsed"})
# Zigbee2MQTT's documented units where they differ from the shared kinds' defaults
# (zigbee-herdsman-converters' exposes: voc in ppb, formaldehyd in mg/m³)
_UNITS: dict[str, str] = {"voc": "ppb", "formaldehyd": "mg/m³"}
_MAINS_MAX_V = 400.0  # see the module docstring: above it, an unlearned `voltage` is mV
_LEARNED_TYPES = frozenset({"numeric", "binary"})
_MAX_DEPTH = 3  # specific exposes nest their features one level; hostile lists go no deeper


class Learned(NamedTuple):
    """What `bridge/devices` says of one property of one device."""

    kind: str
    unit: str | None
    labels: dict[str, str]
    words: dict[str, float] | None  # a string-valued binary's value_on/value_off -> 1/0


@register("zigbee2mqtt")
class Zigbee2MqttFormat(DeviceFormat):
    name = "zigbee2mqtt"
    default_topics: tuple[str, ...] = ("zigbee2mqtt/#",)
    own_kinds = {  # noqa: RUF012 - read-only table, as in DeviceFormat
        # the chip's own temperature: a kind of its own, so that it neither collides with
        # `temperature` in one message nor fires the room's temperature rules
        "device_temperature": "device_temperature",
        "illuminance_lux": "illuminance",
        "soil_moisture": "moisture",
    }

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown zigbee2mqtt option; known: {', '.join(_OPTIONS)}"
            )
        base = self.options.get("base_topic", "zigbee2mqtt")
        if not isinstance(base, str) or not base.strip("/") or any(c in base for c in "#+"):
            raise ValueError("base_topic: must be a topic without wildcards, e.g. 'zigbee2mqtt'")
        self.base_topic = base.strip("/")
        self._prefix = self.base_topic + "/"
        if self.base_topic != "zigbee2mqtt":
            # derived from the option; the class attribute is the firmware's default
            self.default_topics = (self._prefix + "#",)  # per instance
        # device -> property -> Learned, from the last good bridge/devices
        self._learned: dict[str, dict[str, Learned]] = {}
        self._learned_count = 0

    # ---- the hot path

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if not topic.startswith(self._prefix):
            raise self.error(f"topic {topic[:80]!r} is not under {self._prefix!r}", TOPIC)
        rest = topic[len(self._prefix) :]
        if rest.startswith("bridge/") or rest == "bridge":
            if rest == "bridge/devices":
                self._learn(payload)
            return []
        cut = rest.rfind("/")
        if cut >= 0:
            tail = rest[cut + 1 :]
            if tail == _AVAILABILITY:
                return [self._availability(rest[:cut], payload, now)]
            if tail in _COMMANDS:
                return []
            before = rest.rfind("/", 0, cut)
            if rest[before + 1 : cut] in _COMMANDS:  # <name>/set/<attribute>
                return []
        if not rest:
            raise self.error("topic has no friendly name", TOPIC)
        if not payload:
            return []  # a retained state cleared
        data = self.json_object(payload)
        return self._state(rest, data, now)

    def _state(self, device: str, data: dict[str, object], now: float) -> list[Reading]:
        ts = now
        seen = data.get("last_seen")
        if seen is not None:
            ts = self._last_seen(seen, now)
        learned = self._learned.get(device)
        out: list[Reading] = []
        for field, raw in data.items():
            if field in _IGNORED:
                continue
            known = learned.get(field) if learned is not None else None
            if known is not None and known.words is not None and isinstance(raw, str):
                value: float | None = known.words.get(raw)
                if value is None:
                    value = self.value(raw)
            else:
                value = self.value(raw)
            if value is None:
                continue
            if known is not None:
                kind, unit, labels = known.kind, known.unit, known.labels
            else:
                kind = self.kind(field)
                unit = _UNITS.get(kind)
                labels = NO_LABELS
                if kind == "voltage":
                    unit = "mV" if value > _MAINS_MAX_V else "V"
                elif field == "illuminance" and "illuminance_lux" in data:
                    # Zigbee2MQTT 1.x: `illuminance` raw beside `illuminance_lux` in lx
                    kind, unit = "illuminance_raw", None
            reading = self.reading(device, kind, value, ts, unit, labels)
            if reading is not None:
                out.append(reading)
        return out

    def _last_seen(self, raw: object, now: float) -> float:
        """`last_seen` (advanced.last_seen: ISO_8601, ISO_8601_local or epoch ms) as the
        readings' time; the receive time when it is none of these or runs ahead."""
        ts = now
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            ts = float(raw)
            if not math.isfinite(ts):
                return now
            if ts > MS_THRESHOLD:
                ts /= 1000.0
        elif isinstance(raw, str):
            try:
                dt = datetime.fromisoformat(raw)
            except ValueError:
                return now
            if dt.tzinfo is None:
                return now
            ts = dt.timestamp()
        if self.ahead(ts, now):
            return now
        return ts

    def _availability(self, device: str, payload: bytes | bytearray, now: float) -> Reading:
        self.check_size(payload)
        text = payload.decode("utf-8", "replace").strip()
        state: object = text
        if text.startswith("{"):
            state = self.json_object(payload).get("state")
        value = _AVAILABLE.get(state) if isinstance(state, str) else None
        if value is None or not device:
            raise self.error(f"availability of {device[:80]!r}: expected online or offline")
        return Reading.trusted(self.site, device, ONLINE, value, now, NO_LABELS, None)

    # ---- bridge/devices

    def _learn(self, payload: bytes | bytearray) -> None:
        """Replace the learned units by those of this device list; a list that is not one
        is refused (PayloadError) and the good one kept."""
        if not payload:
            return
        devices = self.json(payload)
        if not isinstance(devices, list):
            raise self.error(
                f"bridge/devices: expected a JSON list of devices, got {type(devices).__name__}"
            )
        learned: dict[str, dict[str, Learned]] = {}
        count = 0
        for device in devices:
            if not isinstance(device, dict):
                continue
            name = device.get("friendly_name")
            definition = device.get("definition")
            if not isinstance(name, str) or not name or not isinstance(definition, dict):
                continue
            exposes = definition.get("exposes")
            if not isinstance(exposes, list):
                continue
            props: dict[str, Learned] = {}
            count = self._walk(exposes, props, count)
            if props:
                learned[name] = props
        self._learned = learned
        self._learned_count = count

    def _walk(
        self, exposes: list[object], props: dict[str, Learned], count: int, depth: int = 0
    ) -> int:
        for expose in exposes:
            if not isinstance(expose, dict):
                continue
            kind_of_expose = expose.get("type")
            if not isinstance(kind_of_expose, str):
                continue
            if kind_of_expose not in _LEARNED_TYPES:
                # a specific expose (light, switch, climate…) lists its properties in
                # `features`; a composite's are nested under its own property (skipped)
                features = expose.get("features")
                if (
                    kind_of_expose != "composite"
                    and isinstance(features, list)
                    and depth < _MAX_DEPTH
                ):
                    count = self._walk(features, props, count, depth + 1)
                continue
            prop, name = expose.get("property"), expose.get("name")
            if not isinstance(prop, str) or not isinstance(name, str) or prop in props:
                continue
            if self.over_cap(count):
                continue
            unit = expose.get("unit")
            endpoint = expose.get("endpoint")
            words: dict[str, float] | None = None
            on, off = expose.get("value_on"), expose.get("value_off")
            if isinstance(on, str) and isinstance(off, str):
                words = {on: 1.0, off: 0.0}
            kind = self.kind(name)
            if not isinstance(unit, str) or not unit:
                unit = None
                if kinds.KINDS.get(kind) is not None and kind_of_expose == "numeric":
                    # no unit where the kind has one: not that quantity (Zigbee2MQTT 1.x's
                    # raw `illuminance` beside `illuminance_lux`)
                    kind += "_raw"
            props[prop] = Learned(
                kind,
                unit,
                self.labels(endpoint) if isinstance(endpoint, str) else NO_LABELS,
                words,
            )
            count += 1
        return count

    def discovered(self) -> dict[str, object]:
        return {
            "devices": sorted(self._learned),
            "properties": self._learned_count,
        }


__all__ = ["Learned", "Zigbee2MqttFormat"]
