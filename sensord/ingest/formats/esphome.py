"""ESPHome nodes over MQTT (its `mqtt:` component): format "esphome".

An ESPHome node publishes under its `topic_prefix` (by default the node's name; a user may
set one with `/` in it):

- `<prefix>/sensor/<object_id>/state`: the value as text (`21.5`; `nan` when the sensor
  has none: skipped, counted `non_finite`);
- `<prefix>/binary_sensor/<object_id>/state`: `ON` / `OFF` -> 1 / 0;
- `<prefix>/status`: `online` (birth) / `offline` (last will): a reading of kind `online`;
- `<discovery_prefix>/<sensor|binary_sensor>/<node>/<object_id>/config` (retained, the
  Home Assistant discovery config, keys abbreviated as ESPHome sends them): the sensor's
  unit (`unit_of_meas`) and device class (`dev_cla` -> kind) for its state topic (`stat_t`),
  learned (bounded by the source's max_sensors) and forgotten on an empty config.

Identity: device = the topic prefix (the node's name by default), label `sensor` = the
object_id, always, so that two temperature sensors of one node stay two sensors. The kind:
the discovery config's device class when there is one, else the object_id's recognisable
suffix (`living_room_temperature` -> temperature, `bme280_pressure` -> pressure), else a
known word in it, else the object_id itself. docs/formats/esphome.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import (
    SKIP_NON_FINITE,
    SKIP_TEXT,
    DeviceFormat,
    state_word,
)
from sensord.ingest.formats._prefix import topic_prefixes
from sensord.ingest.kinds import BINARY_KINDS, KINDS, ONLINE

# ESPHome's own names (its sensor platforms' usual object ids) -> shared kinds
_OWN = {
    "wifi_signal": "signal_strength",
    "signal": "signal_strength",
    "battery_level": "battery",
    "illuminance": "illuminance",
}
# binary_sensor device classes -> shared binary kinds (the others keep their name)
_BINARY_CLASSES = {
    "door": "contact",
    "garage_door": "contact",
    "window": "contact",
    "opening": "contact",
    "moisture": "water_leak",
    "gas": "gas_detected",
    "battery": "battery_low",
    "connectivity": ONLINE,
}
# a binary_sensor of kind contact is ON when open (Home Assistant's door classes); the
# shared kind is 1 when closed (kinds.BINARY_KINDS), so it is inverted
_INVERTED = frozenset({"contact"})

_SENSOR = 0
_BINARY = 1
_BINARY_INVERTED = 2
_ONLINE_WORDS = {b"online": 1.0, b"offline": 0.0}
_KNOWN_OPTIONS = ("discovery_prefix", "topic_prefix")
_MAX_TOPIC = 256  # a learned state topic's length


class Sensor(NamedTuple):
    """What a state topic reads as: built once per topic (or per discovery config)."""

    device: str
    kind: str
    unit: str | None
    labels: dict[str, str]
    mode: int  # _SENSOR, _BINARY, _BINARY_INVERTED


@register("esphome")
class EsphomeFormat(DeviceFormat):
    """ESPHome state topics, node status and the node's own discovery configs."""

    name = "esphome"
    default_topics: tuple[str, ...] = (
        "+/sensor/+/state",
        "+/binary_sensor/+/state",
        "+/status",
        "homeassistant/sensor/+/+/config",
        "homeassistant/binary_sensor/+/+/config",
    )
    own_kinds = _OWN

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(_KNOWN_OPTIONS))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown option of format esphome; "
                f"known: {', '.join(_KNOWN_OPTIONS)}"
            )
        dp = self.options.get("discovery_prefix", "homeassistant")
        if not isinstance(dp, str) or "+" in dp or "#" in dp:
            raise ValueError("discovery_prefix: must be a topic prefix without wildcards")
        self.discovery_prefix = dp.strip("/")
        self._discovery_head = f"{self.discovery_prefix}/" if self.discovery_prefix else ""
        prefixes = topic_prefixes(self.options.get("topic_prefix"))
        if prefixes or self.discovery_prefix != "homeassistant":
            topics = [
                f"{p}/{t}"
                for p in prefixes or ("+",)
                for t in ("sensor/+/state", "binary_sensor/+/state", "status")
            ]
            if self.discovery_prefix:
                topics += [f"{self.discovery_prefix}/{c}/+/+/config" for c in _COMPONENTS]
            # the instance's own default filters (the bridge reads default_topics by getattr)
            self.default_topics = tuple(topics)
        self._cache: dict[str, Sensor] = {}  # state topic -> Sensor, from the topic alone
        self._learned: dict[str, Sensor] = {}  # state topic -> Sensor, from discovery
        self._configs: dict[str, str] = {}  # discovery topic -> its state topic
        self._subscribed: set[str] = set()  # learned state topics outside the defaults

    # ---- per message

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        sensor = self._learned.get(topic) or self._cache.get(topic)
        if sensor is None:
            if topic.endswith("/status"):
                return self._status(topic[:-7], payload, now)
            if self._discovery_head and topic.startswith(self._discovery_head):
                if topic.endswith("/config"):
                    self._discover(topic, payload)
                return []
            sensor = self._from_topic(topic)
        if len(payload) > 64:
            self.check_size(payload)
            self.skip(SKIP_TEXT)  # ESPHome's states are a number or ON/OFF, never this long
            return []
        text = bytes(payload)
        if sensor.mode == _SENSOR:
            try:
                value = float(text)
            except ValueError:
                self.skip(SKIP_TEXT)
                return []
            if not math.isfinite(value):
                self.skip(SKIP_NON_FINITE)  # "nan": the sensor has no value (yet)
                return []
            reading = self.reading(
                sensor.device, sensor.kind, value, now, sensor.unit, sensor.labels
            )
            return [] if reading is None else [reading]
        word = state_word(text.decode("utf-8", "replace"))
        if word is None:
            self.skip(SKIP_TEXT)
            return []
        if sensor.mode == _BINARY_INVERTED:
            word = 1.0 - word
        return [
            Reading.trusted(self.site, sensor.device, sensor.kind, word, now, sensor.labels, None)
        ]

    def _status(self, device: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if not device:
            raise self.error("topic 'status' has no node prefix", "topic")
        if device == self.discovery_prefix:
            return []  # Home Assistant's own birth message, <discovery_prefix>/status
        value = _ONLINE_WORDS.get(bytes(payload[:16]).strip())
        if value is None:
            raise self.error("status payload must be online or offline")
        return [Reading.trusted(self.site, device, ONLINE, value, now, {}, None)]

    def _from_topic(self, topic: str) -> Sensor:
        parts = topic.rsplit("/", 3)
        if len(parts) != 4 or parts[3] != "state" or not parts[0] or not parts[2]:
            raise self.error(
                f"topic {topic[:80]!r} is none of <node>/sensor/<id>/state, "
                "<node>/binary_sensor/<id>/state, <node>/status",
                "topic",
            )
        device, component, object_id, _ = parts
        if component == "sensor":
            sensor = Sensor(device, self._kind(object_id), None, self.labels(object_id), _SENSOR)
        elif component == "binary_sensor":
            kind = _binary_kind(self._kind(object_id), object_id)
            mode = _BINARY_INVERTED if kind in _INVERTED else _BINARY
            sensor = Sensor(device, kind, None, self.labels(object_id), mode)
        else:
            raise self.error(f"component {component[:40]!r} carries no measurement", "topic")
        if len(self._cache) < self.max_sensors:
            self._cache[topic] = sensor
        return sensor

    def _kind(self, object_id: str) -> str:
        """The shared kind an object_id names: the longest known suffix, else a known word
        in it, else the object_id (snake_case)."""
        words = kinds.snake(object_id).split("_")
        for i in range(len(words)):
            found = _known("_".join(words[i:]))
            if found is not None:
                return found
        for word in reversed(words):
            found = _known(word)
            if found is not None:
                return found
        return kinds.snake(object_id) or object_id

    # ---- discovery

    def _discover(self, topic: str, payload: bytes | bytearray) -> None:
        """Learn (or forget, on an empty payload) the sensor a discovery config describes.
        A config that is not ESPHome's shape is refused and the last good one kept."""
        rest = topic[len(self._discovery_head) : -7].split("/")
        if len(rest) != 3 or rest[0] not in _COMPONENTS or not rest[1] or not rest[2]:
            return  # another integration's config (or a 2-level one): not an ESPHome node's
        component, node, object_id = rest
        if not payload:
            self._forget(topic)
            return
        config = self.json_object(payload)
        state_topic = config.get("stat_t", config.get("state_topic"))
        if not isinstance(state_topic, str) or not state_topic:
            raise self.error("discovery config has no state topic (stat_t)")
        base = config.get("~")
        if isinstance(base, str):  # Home Assistant's base topic; ESPHome does not send it
            if state_topic.startswith("~"):
                state_topic = base + state_topic[1:]
            elif state_topic.endswith("~"):
                state_topic = state_topic[:-1] + base
        if len(state_topic) > _MAX_TOPIC or "+" in state_topic or "#" in state_topic:
            raise self.error("discovery config's state topic is too long or has wildcards")
        unit = config.get("unit_of_meas", config.get("unit_of_measurement"))
        if unit is not None and (not isinstance(unit, str) or len(unit) > 32):
            raise self.error("discovery config's unit_of_meas must be a short string")
        device_class = config.get("dev_cla", config.get("device_class"))
        if device_class is not None and (
            not isinstance(device_class, str) or len(device_class) > 64
        ):
            raise self.error("discovery config's dev_cla must be a short string")
        # the state topic's own layout names device and object_id, as without discovery;
        # a custom state topic takes the discovery topic's node and object_id
        parts = state_topic.rsplit("/", 3)
        on_layout = len(parts) == 4 and parts[1] == component and parts[3] == "state"
        if on_layout:
            node, object_id = parts[0], parts[2]
        if component == "sensor":
            kind = kinds.kind_of(device_class) if device_class else self._kind(object_id)
            sensor = Sensor(node, kind, unit or None, self.labels(object_id), _SENSOR)
        else:
            if device_class:
                found = _BINARY_CLASSES.get(device_class) or kinds.kind_of(device_class)
                kind = _binary_kind(found, device_class)
            else:
                kind = _binary_kind(self._kind(object_id), object_id)
            mode = _BINARY_INVERTED if kind in _INVERTED else _BINARY
            sensor = Sensor(node, kind, None, self.labels(object_id), mode)
        previous = self._configs.get(topic)
        if previous is None:
            if self.over_cap(len(self._configs)):
                return  # counted as sensor_cap; the sensor still reads from its topic
        elif previous != state_topic:
            self._forget(topic)
        self._configs[topic] = state_topic
        self._learned[state_topic] = sensor
        self._cache.pop(state_topic, None)
        if not on_layout and self.link is not None and state_topic not in self._subscribed:
            self._subscribed.add(state_topic)
            self.link.subscribe(state_topic)

    def _forget(self, topic: str) -> None:
        state_topic = self._configs.pop(topic, None)
        if state_topic is None:
            return
        if state_topic not in self._configs.values():
            self._learned.pop(state_topic, None)
            if state_topic in self._subscribed:
                self._subscribed.discard(state_topic)
                if self.link is not None:
                    self.link.unsubscribe(state_topic)

    def discovered(self) -> dict[str, object]:
        """What the discovery configs taught: state topic -> device, kind, unit, sensor."""
        return {
            "sensors": {
                t: {
                    "device": s.device,
                    "kind": s.kind,
                    "unit": s.unit,
                    "sensor": s.labels["sensor"],
                }
                for t, s in self._learned.items()
            }
        }


_COMPONENTS = ("sensor", "binary_sensor")


def _binary_kind(found: str, name: str) -> str:
    """A binary sensor's kind: a shared binary kind when `found` is one, else its own name,
    with `_detected` added where that name is a measurement's kind (a binary `power`)."""
    if found in BINARY_KINDS:
        return found
    own = kinds.snake(name) or name
    return f"{own}_detected" if own in KINDS else own


def _known(name: str) -> str | None:
    found = _OWN.get(name)
    if found is not None:
        return found
    if name in KINDS or name in BINARY_KINDS:
        return name
    return kinds.ALIASES.get(name)
