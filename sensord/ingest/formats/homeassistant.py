"""Format "homeassistant": Home Assistant MQTT discovery.

Devices (Zigbee2MQTT, ESPHome, Tasmota, OpenMQTTGateway, …) announce each entity with a
retained JSON config on `<prefix>/<component>/[<node_id>/]<object_id>/config`
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery); the config names the
entity's state topic, device, device class, unit and `value_template`. This format learns
sensors and binary sensors from those configs, subscribes to their state and availability
topics through the bridge (`bind`), and turns each state message into one reading per
sensor of that topic. A small state machine per config topic, as Home Assistant's own
discovery: config seen -> sensor learned (subscribed); new valid config -> sensor updated;
empty config -> sensor forgotten (unsubscribed once no other sensor uses the topic). The
broker redelivers the retained configs after a restart, so nothing is persisted.

Discovery configs and their templates come from anyone who can publish: each bound (sensor
count, topic count, config size, template size, template syntax and render time) is
documented in docs/formats/homeassistant.md; a config that breaks one is refused
(PayloadError) or counted, and never replaces the sensor it was meant to update.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, SourceLink, register
from sensord.ingest.formats._device import NO_LABELS, DeviceFormat
from sensord.ingest.formats._fields import loads_json
from sensord.ingest.formats._ha_abbreviations import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    expand,
)
from sensord.ingest.formats._ha_template import TemplateRefused, ValueTemplate, compile_template
from sensord.ingest.reasons import NOT_JSON, TOO_LARGE

SENSOR = "sensor"
BINARY_SENSOR = "binary_sensor"
DEVICE = "device"  # device-based discovery: one config, many components (`cmps`)
COMPONENTS = frozenset({SENSOR, BINARY_SENSOR})

# skip reasons of this format (sensord_fields_skipped_total{reason}); docs/formats/...
SKIP_COMPONENT = "component"  # a config of a component that carries no reading (light, …)
SKIP_TEMPLATE = "template"  # a value template that failed to render on this message
SKIP_TEMPLATE_SLOW = "template_slow"  # a render over the time budget
SKIP_TEMPLATE_DISABLED = "template_disabled"  # a message for a sensor whose template is off
SKIP_TOPIC_CAP = "topic_cap"  # a config whose topics would pass max_topics
SKIP_STATE = "state"  # a binary sensor's payload that is neither payload_on nor payload_off

SLOW_STRIKES = 3  # consecutive over-budget renders that disable a sensor's template
MAX_AVAILABILITY = 8  # availability topics per sensor
MAX_TOPIC = 1024  # characters of a state or availability topic
MAX_NAME = 256  # characters of a device name, unique_id, object id
MAX_UNIT = 64
MAX_WORD = 256  # characters of payload_on/off, payload_available/not_available

# binary-sensor device classes whose kind is not their own name
# (https://www.home-assistant.io/integrations/binary_sensor/#device-class); the door family
# says ON = open, and the shared kind `contact` is 1 when closed: inverted
BINARY_CLASSES: dict[str, tuple[str, bool]] = {
    "battery": ("battery_low", False),
    "carbon_monoxide": ("carbon_monoxide_detected", False),
    "connectivity": (kinds.ONLINE, False),
    "door": ("contact", True),
    "garage_door": ("contact", True),
    "gas": ("gas_detected", False),
    "light": ("light_detected", False),
    "moisture": ("moisture_detected", False),
    "opening": ("contact", True),
    "power": ("power_detected", False),
    "sound": ("sound_detected", False),
    "window": ("contact", True),
}

_OPTIONS = ("prefix", "max_config", "max_template", "template_budget_ms", "max_topics")
_NOT_JSON: object = object()


@dataclass(frozen=True, slots=True)
class Availability:
    topic: str
    available: str
    not_available: str
    template: ValueTemplate | None


@dataclass(slots=True, eq=False)
class Sensor:
    """One learned entity; `key` is its config topic (`#<component id>` appended for a
    component of a device-based config)."""

    key: str
    config_topic: str
    unique_id: str | None
    component: str
    state_topic: str
    device: str
    kind: str
    unit: str | None
    labels: dict[str, str]
    template: ValueTemplate | None
    payload_on: str
    payload_off: str
    invert: bool
    availability: tuple[Availability, ...]
    topics: tuple[str, ...] = ()
    slow: int = 0  # consecutive renders over the budget
    disabled: bool = False

    def __post_init__(self) -> None:
        seen = dict.fromkeys([self.state_topic, *(a.topic for a in self.availability)])
        self.topics = tuple(seen)


def _text(raw: object, key: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ValueError(f"{key} must be text, got a boolean")
    if isinstance(raw, str | int | float):
        return str(raw)
    raise ValueError(f"{key} must be text, got {type(raw).__name__}")


@register("homeassistant")
class HomeAssistantFormat(DeviceFormat):
    """Home Assistant MQTT discovery: sensors and binary sensors; see the module docstring."""

    name = "homeassistant"
    default_topics: tuple[str, ...] = ("homeassistant/+/+/config", "homeassistant/+/+/+/config")

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown option of format homeassistant; known: "
                + ", ".join(_OPTIONS)
            )
        prefix = self.options.get("prefix", "homeassistant")
        if (
            not isinstance(prefix, str)
            or not prefix
            or prefix.startswith("/")
            or prefix.endswith("/")
            or any(c in prefix for c in "+#\0")
        ):
            raise ValueError("prefix: must be a topic without wildcards or a leading/trailing '/'")
        self.prefix = prefix
        self.max_config = self._positive_int("max_config", 65536)
        self.max_template = self._positive_int("max_template", 1024)
        self.max_topics = self._positive_int("max_topics", 2 * self.max_sensors)
        budget = self.options.get("template_budget_ms", 5.0)
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
            raise ValueError("template_budget_ms: must be a number of milliseconds > 0")
        self.budget = float(budget) / 1000.0
        # the firmware's topics under this source's prefix (the class attribute is the
        # default prefix's); set on the instance, where the bridge looks it up
        self.default_topics = (f"{prefix}/+/+/config", f"{prefix}/+/+/+/config")
        self._config_start = prefix + "/"
        self.sensors: dict[str, Sensor] = {}  # key -> sensor
        self._by_config: dict[str, set[str]] = {}  # config topic -> keys
        self._by_uid: dict[str, str] = {}  # unique_id -> key
        self._by_state: dict[str, list[Sensor]] = {}
        self._by_avail: dict[str, list[Sensor]] = {}
        self._refs: dict[str, int] = {}  # topic -> sensors using it
        self._subscribed: set[str] = set()

    def _positive_int(self, key: str, default: int) -> int:
        raw = self.options.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ValueError(f"{key}: must be an integer >= 1")
        return raw

    # ---- the bridge's side

    def bind(self, link: SourceLink) -> None:
        super().bind(link)
        self._sync(list(self._refs))

    def discovered(self) -> dict[str, object]:
        devices: dict[str, set[str]] = {}
        for sensor in self.sensors.values():
            found = devices.setdefault(sensor.device, set())
            found.add(sensor.kind)
            if sensor.availability:
                found.add(kinds.ONLINE)
        return {
            "sensors": len(self.sensors),
            "topics": len(self._refs),
            "templates_disabled": sum(s.disabled for s in self.sensors.values()),
            "devices": {name: sorted(k) for name, k in sorted(devices.items())},
        }

    # ---- per message

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        sensors = self._by_state.get(topic)
        watchers = self._by_avail.get(topic)
        if sensors is None and watchers is None:
            if topic.startswith(self._config_start) and topic.endswith("/config"):
                self._config(topic, payload)
            return []  # a config, or a topic no sensor uses (any more)
        self.check_size(payload)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("state payload is not UTF-8 text") from None
        out: list[Reading] = []
        if sensors is not None:
            self._states(sensors, text, payload, now, out)
        if watchers is not None:
            self._availability(topic, watchers, text, payload, now, out)
        return out

    def _states(
        self,
        sensors: list[Sensor],
        text: str,
        payload: bytes | bytearray,
        now: float,
        out: list[Reading],
    ) -> None:
        value_json: object = None  # parsed once per message, for all sensors of the topic
        parsed = False
        for sensor in sensors:
            template = sensor.template
            rendered: str | None
            if template is None:
                rendered = text
            elif sensor.disabled:
                self.skip(SKIP_TEMPLATE_DISABLED)
                continue
            else:
                context: dict[str, object] = {"value": text}
                if template.uses_json:
                    if not parsed:
                        value_json, parsed = self._loads(payload), True
                    if value_json is not _NOT_JSON:
                        context["value_json"] = value_json
                rendered = self._render(sensor, template, context)
                if rendered is None:
                    continue
            if sensor.component == BINARY_SENSOR:
                if rendered == sensor.payload_on:
                    value = 0.0 if sensor.invert else 1.0
                elif rendered == sensor.payload_off:
                    value = 1.0 if sensor.invert else 0.0
                else:
                    self.skip(SKIP_STATE)
                    continue
            else:
                found = self.value(rendered)
                if found is None:
                    continue
                value = found
            reading = self.reading(
                sensor.device, sensor.kind, value, now, sensor.unit, sensor.labels
            )
            if reading is not None:
                out.append(reading)

    def _render(
        self, sensor: Sensor, template: ValueTemplate, context: dict[str, object]
    ) -> str | None:
        """The rendered text, or None (counted); a render over the budget is counted, and
        SLOW_STRIKES of them in a row disable the sensor's template until a new config."""
        start = time.perf_counter()
        try:
            rendered: str | None = template.render(context)
        except Exception:  # noqa: BLE001 - a template's own error (undefined, type, sandbox)
            self.skip(SKIP_TEMPLATE)
            rendered = None
        if time.perf_counter() - start > self.budget:
            self.skip(SKIP_TEMPLATE_SLOW)
            sensor.slow += 1
            if sensor.slow >= SLOW_STRIKES:
                sensor.disabled = True
        else:
            sensor.slow = 0
        return rendered

    def _availability(  # noqa: PLR0917 - the per-message path, as _states
        self,
        topic: str,
        watchers: list[Sensor],
        text: str,
        payload: bytes | bytearray,
        now: float,
        out: list[Reading],
    ) -> None:
        done: set[str] = set()  # one `online` reading per device, however many sensors
        for sensor in watchers:
            if sensor.device in done:
                continue
            for entry in sensor.availability:
                if entry.topic != topic:
                    continue
                rendered = text
                if entry.template is not None:
                    context: dict[str, object] = {"value": text}
                    if entry.template.uses_json:
                        found = self._loads(payload)
                        if found is not _NOT_JSON:
                            context["value_json"] = found
                    try:
                        rendered = entry.template.render(context)
                    except Exception:  # noqa: BLE001 - as in _render
                        self.skip(SKIP_TEMPLATE)
                        continue
                if rendered == entry.available:
                    value = 1.0
                elif rendered == entry.not_available:
                    value = 0.0
                else:
                    self.skip(SKIP_STATE)
                    continue
                done.add(sensor.device)
                out.append(
                    Reading.trusted(
                        self.site, sensor.device, kinds.ONLINE, value, now, NO_LABELS, None
                    )
                )
                break

    @staticmethod
    def _loads(payload: bytes | bytearray) -> object:
        try:
            return loads_json(payload, "")
        except (PayloadError, RecursionError):
            return _NOT_JSON

    # ---- discovery configs

    def _config(self, topic: str, payload: bytes | bytearray) -> None:
        parts = topic[len(self._config_start) : -len("/config")].split("/")
        if len(parts) == 2:
            component, node_id, object_id = parts[0], "", parts[1]
        elif len(parts) == 3:
            component, node_id, object_id = parts
        else:
            return  # not a discovery topic (the filters match nothing else)
        if component not in COMPONENTS and component != DEVICE:
            self.skip(SKIP_COMPONENT)
            return
        if not payload:
            self._apply(topic, {}, list(self._by_config.get(topic, ())))
            return
        if len(payload) > self.max_config:
            raise PayloadError(
                TOO_LARGE,
                f"{self.name}: config {len(payload)} bytes > max_config {self.max_config}",
            )
        try:
            config = self.json_object(payload)
        except RecursionError:
            raise PayloadError(NOT_JSON, f"{self.name}: config nested too deep") from None
        config = expand(config, ABBREVIATIONS)
        try:
            if component == DEVICE:
                new, remove = self._device_config(topic, node_id, object_id, config)
            else:
                new = {topic: self._sensor(topic, topic, component, node_id, object_id, config)}
                remove = []
        except ValueError as exc:
            raise self.error(f"config {topic}: {exc}") from None
        self._apply(topic, new, remove)

    def _device_config(
        self, topic: str, node_id: str, object_id: str, config: dict[str, object]
    ) -> tuple[dict[str, Sensor], list[str]]:
        """Device-based discovery: shared options at the root, one entry per component in
        `components`; a component of only `platform` is removed, as Home Assistant does."""
        components = config.pop("components", None)
        if not isinstance(components, dict) or not components:
            raise ValueError("components must be a non-empty object")
        new: dict[str, Sensor] = {}
        remove: list[str] = []
        for cid, raw in components.items():
            if not isinstance(raw, dict):
                raise ValueError(f"components.{cid} must be an object")
            own = expand(raw, ABBREVIATIONS)
            platform = own.get("platform")
            if not isinstance(platform, str):
                raise ValueError(f"components.{cid}.platform must be text")
            key = f"{topic}#{cid}"
            if len(own) == 1:
                remove.append(key)
            elif platform in COMPONENTS:
                merged = {**config, **own}
                new[key] = self._sensor(key, topic, platform, node_id or object_id, cid, merged)
            else:
                self.skip(SKIP_COMPONENT)
                remove.append(key)  # was it a sensor before? not any more
        return new, remove

    def _sensor(  # noqa: PLR0917 - one place builds a sensor from both discovery shapes
        self,
        key: str,
        config_topic: str,
        component: str,
        node_id: str,
        object_id: str,
        config: dict[str, object],
    ) -> Sensor:
        """A sensor from an expanded config, or ValueError naming the key at fault."""
        base = config.get("~")
        if base is not None:
            if not isinstance(base, str) or not base:
                raise ValueError("~ must be a non-empty topic")
            config = {
                k: _base(v, base) if k.endswith("topic") and isinstance(v, str) else v
                for k, v in config.items()
            }
        state_topic = self._topic(config.get("state_topic"), "state_topic")
        if state_topic is None:
            raise ValueError("state_topic is required")
        device = self._device(config.get("device"), node_id, object_id)
        device_class = _text(config.get("device_class"), "device_class")
        name = _text(config.get("name"), "name")
        invert = False
        if device_class:
            if component == BINARY_SENSOR and device_class in BINARY_CLASSES:
                kind, invert = BINARY_CLASSES[device_class]
            else:
                kind = self.kind(device_class)
        else:
            kind = self._kind_of_names(config.get("object_id"), object_id, name)
        if component == BINARY_SENSOR and kind in kinds.KINDS:
            kind += "_detected"  # a yes/no of a measured kind: keep the two apart
        unit = _text(config.get("unit_of_measurement"), "unit_of_measurement")
        if unit is not None and len(unit) > MAX_UNIT:
            raise ValueError(f"unit_of_measurement longer than {MAX_UNIT}")
        unique_id = _text(config.get("unique_id"), "unique_id")
        if unique_id is not None and len(unique_id) > MAX_NAME:
            raise ValueError(f"unique_id longer than {MAX_NAME}")
        label = object_id[:MAX_NAME]
        return Sensor(
            key=key,
            config_topic=config_topic,
            unique_id=unique_id or None,
            component=component,
            state_topic=state_topic,
            device=device,
            kind=kind,
            unit=unit or None,
            labels=NO_LABELS if label in {kind, device} else self.labels(label),
            template=self._template(config.get("value_template"), "value_template"),
            payload_on=self._word(config.get("payload_on"), "payload_on", "ON"),
            payload_off=self._word(config.get("payload_off"), "payload_off", "OFF"),
            invert=invert,
            availability=self._availability_of(config, base),
        )

    def _kind_of_names(self, *names: object) -> str:
        """No device class: the first of object_id, the topic's object id and the name that
        is a known kind; else the topic's object id, snake_case."""
        candidates = [n for n in names if isinstance(n, str) and n]
        for candidate in candidates:
            kind = self.kind(candidate)
            if kind in kinds.KINDS or kind in kinds.BINARY_KINDS:
                return kind
        return self.kind(candidates[0][:MAX_NAME]) if candidates else "value"

    def _device(self, raw: object, node_id: str, object_id: str) -> str:
        """dev.name, else dev.identifiers[0], else the node id, else the object id."""
        if raw is not None:
            if not isinstance(raw, dict):
                raise ValueError("device must be an object")
            dev = expand(raw, DEVICE_ABBREVIATIONS)
            name = _text(dev.get("name"), "device.name")
            if not name:
                ids = dev.get("identifiers")
                if isinstance(ids, list):
                    ids = ids[0] if ids else None
                name = _text(ids, "device.identifiers")
            if name:
                if len(name) > MAX_NAME:
                    raise ValueError(f"device name longer than {MAX_NAME}")
                return name
        return node_id or object_id

    def _topic(self, raw: object, key: str) -> str | None:
        """A topic to subscribe to: a topic name (no wildcards: one config must not
        subscribe sensord to the whole broker), not a discovery config topic."""
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise ValueError(f"{key} must be a non-empty topic")
        if len(raw) > MAX_TOPIC:
            raise ValueError(f"{key} longer than {MAX_TOPIC} characters")
        if any(c in raw for c in "+#\0"):
            raise ValueError(f"{key} {raw!r}: wildcards are not allowed")
        if raw.startswith(self._config_start) and raw.endswith("/config"):
            raise ValueError(f"{key} {raw!r} is a discovery config topic")
        return raw

    def _template(self, raw: object, key: str) -> ValueTemplate | None:
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise ValueError(f"{key} must be text")
        try:
            return compile_template(raw, self.max_template)
        except TemplateRefused as exc:
            raise ValueError(f"{key}: {exc}") from None

    @staticmethod
    def _word(raw: object, key: str, default: str) -> str:
        word = _text(raw, key)
        if word is None:
            return default
        if len(word) > MAX_WORD:
            raise ValueError(f"{key} longer than {MAX_WORD}")
        return word

    def _availability_of(
        self, config: dict[str, object], base: str | None
    ) -> tuple[Availability, ...]:
        entries: list[Availability] = []
        topic = self._topic(config.get("availability_topic"), "availability_topic")
        if topic is not None:
            entries.append(
                Availability(
                    topic,
                    self._word(config.get("payload_available"), "payload_available", "online"),
                    self._word(
                        config.get("payload_not_available"), "payload_not_available", "offline"
                    ),
                    self._template(config.get("availability_template"), "availability_template"),
                )
            )
        raw = config.get("availability")
        if raw is not None:
            items = [raw] if isinstance(raw, dict) else raw
            if not isinstance(items, list):
                raise ValueError("availability must be a list of objects")
            if len(items) + len(entries) > MAX_AVAILABILITY:
                raise ValueError(f"more than {MAX_AVAILABILITY} availability topics")
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ValueError(f"availability[{i}] must be an object")
                entry = expand(item, ABBREVIATIONS)
                raw_topic = entry.get("topic")
                if isinstance(raw_topic, str) and base is not None:
                    raw_topic = _base(raw_topic, base)
                found = self._topic(raw_topic, f"availability[{i}].topic")
                if found is None:
                    raise ValueError(f"availability[{i}].topic is required")
                entries.append(
                    Availability(
                        found,
                        self._word(entry.get("payload_available"), "payload_available", "online"),
                        self._word(
                            entry.get("payload_not_available"), "payload_not_available", "offline"
                        ),
                        self._template(
                            entry.get("value_template"), f"availability[{i}].value_template"
                        ),
                    )
                )
        return tuple(entries)

    # ---- the registry: all checks first, then the change, all or nothing

    def _apply(self, config_topic: str, new: dict[str, Sensor], remove: list[str]) -> None:
        gone = {key for key in remove if key in self.sensors}
        replaced = {key for key in new if key in self.sensors}
        uids: dict[str, str] = {}
        for key, sensor in new.items():
            uid = sensor.unique_id
            if uid is None:
                continue
            owner = uids.get(uid) or self._by_uid.get(uid)
            if owner is not None and owner != key and owner not in gone:
                raise self.error(f"config {config_topic}: unique_id {uid!r} is taken by {owner}")
            uids[uid] = key
        added = len(new) - len(replaced)
        if added > 0 and self.over_cap(len(self.sensors) - len(gone) + added - 1):
            return  # over max_sensors: counted (sensor_cap), the old sensors stay
        fresh = {t for s in new.values() for t in s.topics if t not in self._refs}
        if fresh and len(self._refs) + len(fresh) > self.max_topics:
            self.skip(SKIP_TOPIC_CAP)
            return
        touched: list[str] = []
        for key in gone | replaced:
            touched.extend(self._detach(self.sensors[key]))
        for sensor in new.values():
            touched.extend(self._attach(sensor))
        self._sync(touched)

    def _attach(self, sensor: Sensor) -> tuple[str, ...]:
        self.sensors[sensor.key] = sensor
        self._by_config.setdefault(sensor.config_topic, set()).add(sensor.key)
        if sensor.unique_id is not None:
            self._by_uid[sensor.unique_id] = sensor.key
        self._by_state.setdefault(sensor.state_topic, []).append(sensor)
        for topic in {a.topic for a in sensor.availability}:
            self._by_avail.setdefault(topic, []).append(sensor)
        for topic in sensor.topics:
            self._refs[topic] = self._refs.get(topic, 0) + 1
        return sensor.topics

    def _detach(self, sensor: Sensor) -> tuple[str, ...]:
        del self.sensors[sensor.key]
        keys = self._by_config[sensor.config_topic]
        keys.discard(sensor.key)
        if not keys:
            del self._by_config[sensor.config_topic]
        if sensor.unique_id is not None and self._by_uid.get(sensor.unique_id) == sensor.key:
            del self._by_uid[sensor.unique_id]
        _unlist(self._by_state, sensor.state_topic, sensor)
        for topic in {a.topic for a in sensor.availability}:
            _unlist(self._by_avail, topic, sensor)
        for topic in sensor.topics:
            left = self._refs[topic] - 1
            if left:
                self._refs[topic] = left
            else:
                del self._refs[topic]
        return sensor.topics

    def _sync(self, topics: Iterable[str]) -> None:
        """Subscribe to what is used and not subscribed, unsubscribe what is no more used."""
        link = self.link
        if link is None:
            return  # bind() subscribes to everything in _refs
        for topic in dict.fromkeys(topics):
            used = topic in self._refs
            if used and topic not in self._subscribed:
                link.subscribe(topic)
                self._subscribed.add(topic)
            elif not used and topic in self._subscribed:
                link.unsubscribe(topic)
                self._subscribed.discard(topic)


def _base(value: str, base: str) -> str:
    """Home Assistant's `~`: the base topic in place of a leading or trailing `~`."""
    if value.startswith("~"):
        return base + value[1:]
    if value.endswith("~"):
        return value[:-1] + base
    return value


def _unlist(index: dict[str, list[Sensor]], topic: str, sensor: Sensor) -> None:
    found = index.get(topic)
    if found is None:
        return
    rest = [s for s in found if s is not sensor]
    if rest:
        index[topic] = rest
    else:
        del index[topic]
