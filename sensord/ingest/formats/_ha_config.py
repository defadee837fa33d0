"""Home Assistant discovery configs: the options of format "homeassistant", the learned-
sensor model and the reader that turns one discovery config into sensors.

- the components, skip reasons and bounds of the format (docs/formats/homeassistant.md);
- `Sensor` and `Availability`: one learned entity, as the state hot path reads it;
- `HaConfigReader`, the base of `HomeAssistantFormat`: validates the source's options and
  builds `Sensor`s from an expanded config (both discovery shapes: one entity per config,
  and device-based `components`), raising ValueError naming the key at fault. It holds no
  learned state: the registry of sensors and their subscriptions is the format's
  (homeassistant.py), which applies a config's sensors all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats._device import NO_LABELS, DeviceFormat
from sensord.ingest.formats._ha_abbreviations import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    expand,
)
from sensord.ingest.formats._ha_template import TemplateRefused, ValueTemplate, compile_template

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


class HaConfigReader(DeviceFormat):
    """The options and the discovery-config reader of `HomeAssistantFormat`: no learned
    state; see the module docstring."""

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

    def _positive_int(self, key: str, default: int) -> int:
        raw = self.options.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ValueError(f"{key}: must be an integer >= 1")
        return raw

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


def _base(value: str, base: str) -> str:
    """Home Assistant's `~`: the base topic in place of a leading or trailing `~`."""
    if value.startswith("~"):
        return base + value[1:]
    if value.endswith("~"):
        return value[:-1] + base
    return value
