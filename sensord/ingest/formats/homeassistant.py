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

This module holds the format itself: the per-message path (state and availability
messages), the dispatch of config messages, and the registry of learned sensors with their
subscriptions (all checks first, then the change). The options, the bounds, the `Sensor`
model and the reading of one config into sensors are in `_ha_config` (the base class
`HaConfigReader`); the abbreviation tables in `_ha_abbreviations`, the sandboxed templates
in `_ha_template`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, SourceLink, register
from sensord.ingest.formats._device import NO_LABELS
from sensord.ingest.formats._fields import loads_json
from sensord.ingest.formats._ha_abbreviations import ABBREVIATIONS, expand
from sensord.ingest.formats._ha_config import (
    BINARY_SENSOR,
    COMPONENTS,
    DEVICE,
    SKIP_COMPONENT,
    SKIP_STATE,
    SKIP_TEMPLATE,
    SKIP_TEMPLATE_DISABLED,
    SKIP_TEMPLATE_SLOW,
    SKIP_TOPIC_CAP,
    SLOW_STRIKES,
    HaConfigReader,
    Sensor,
)
from sensord.ingest.formats._ha_template import ValueTemplate
from sensord.ingest.reasons import NOT_JSON, TOO_LARGE

_NOT_JSON: object = object()

# State messages on topics no learned sensor uses yet, held until their config arrives:
# after a restart, a persistent session's queued messages come right after CONNACK, the
# retained configs only after the SUBSCRIBE. Bounded by count, bytes and age; what falls
# out is counted as skipped `no_config`.
EARLY_MAX = 10_000
EARLY_MAX_BYTES = 16 * 1024 * 1024
EARLY_MAX_AGE = 600.0
SKIP_NO_CONFIG = "no_config"


@register("homeassistant")
class HomeAssistantFormat(HaConfigReader):
    """Home Assistant MQTT discovery: sensors and binary sensors; see the module docstring."""

    name = "homeassistant"
    default_topics: tuple[str, ...] = ("homeassistant/+/+/config", "homeassistant/+/+/+/config")
    # the bridge routes here what no source's filter matches: the state topics this format
    # subscribed to in an earlier run, which a persistent session still delivers
    learns_topics = True

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        self.sensors: dict[str, Sensor] = {}  # key -> sensor
        self._by_config: dict[str, set[str]] = {}  # config topic -> keys
        self._by_uid: dict[str, str] = {}  # unique_id -> key
        self._by_state: dict[str, list[Sensor]] = {}
        self._by_avail: dict[str, list[Sensor]] = {}
        self._refs: dict[str, int] = {}  # topic -> sensors using it
        self._subscribed: set[str] = set()
        # topic -> [(payload, receive time)] of messages held until a config names the topic
        # (kept until they age out: another config may want the same topic, e.g. the
        # humidity sensor beside the temperature one on one JSON state topic)
        self._early: dict[str, list[tuple[bytes, float]]] = {}
        self._read_early: set[str] = set()  # topics whose held messages a sensor has read
        self._fresh: list[Sensor] = []
        self._early_count = 0
        self._early_bytes = 0

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
                if not self._early:
                    self._config(topic, payload)
                    return []
                self._fresh = []  # _attach notes the sensors this config adds
                self._config(topic, payload)
                return self._replay(self._fresh)
            self._hold(topic, payload, now)  # a topic no sensor uses: yet, or any more
            return []
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

    def _hold(self, topic: str, payload: bytes | bytearray, now: float) -> None:
        early = self._early
        while early and (
            self._early_count >= EARLY_MAX
            or self._early_bytes + len(payload) > EARLY_MAX_BYTES
            or now - next(iter(early.values()))[0][1] > EARLY_MAX_AGE
        ):
            first = next(iter(early))
            held = early[first]
            dropped = held.pop(0)
            self._early_count -= 1
            self._early_bytes -= len(dropped[0])
            if first not in self._read_early:
                self.skip(SKIP_NO_CONFIG)  # no sensor ever read it
            if not held:
                del early[first]
                self._read_early.discard(first)
        if len(payload) > EARLY_MAX_BYTES:
            self.skip(SKIP_NO_CONFIG)
            return
        early.setdefault(topic, []).append((bytes(payload), now))
        self._early_count += 1
        self._early_bytes += len(payload)

    def _replay(self, fresh: list[Sensor]) -> list[Reading]:
        """The held messages of the topics of sensors a config has just added, read for
        those sensors only (a sensor that was there already read them when they came)."""
        out: list[Reading] = []
        for sensor in fresh:
            held = self._early.get(sensor.state_topic)
            if held:
                self._read_early.add(sensor.state_topic)
                for payload, received in held:
                    self._read_held(sensor.state_topic, [sensor], payload, received, out)
            for topic in {a.topic for a in sensor.availability}:
                held = self._early.get(topic)
                if held:
                    self._read_early.add(topic)
                    # the newest availability message is the device's state now
                    payload, received = held[-1]
                    self._read_held(topic, [sensor], payload, received, out, avail=True)
        return out

    def _read_held(  # noqa: PLR0917 - as _states
        self,
        topic: str,
        sensors: list[Sensor],
        payload: bytes,
        received: float,
        out: list[Reading],
        avail: bool = False,
    ) -> None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self.skip(SKIP_STATE)  # refused had it come after its config
            return
        if avail:
            self._availability(topic, sensors, text, payload, received, out)
        else:
            self._states(sensors, text, payload, received, out)

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
        if replaced:  # an updated sensor has read what was held already
            self._fresh = [s for s in self._fresh if s.key not in replaced]
        self._sync(touched)

    def _attach(self, sensor: Sensor) -> tuple[str, ...]:
        self.sensors[sensor.key] = sensor
        self._fresh.append(sensor)
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


def _unlist(index: dict[str, list[Sensor]], topic: str, sensor: Sensor) -> None:
    found = index.get(topic)
    if found is None:
        return
    rest = [s for s in found if s is not sensor]
    if rest:
        index[topic] = rest
    else:
        del index[topic]
