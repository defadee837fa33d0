"""Sources: which payload format reads which MQTT topics (docs/sources.md).

One MQTT connection serves every source. `[mqtt] topics` + `topic_template` are the source
"sensord" (format "sensord"), and each `[[mqtt.sources]]` table is one more. A message goes
to the source whose topic filter matches it, the most specific filter first (see
`specificity`); the choice is cached per topic, so the per-message cost is one dict lookup
(none with a single source).

A format that learns topics (Home Assistant discovery) or answers devices (Sparkplug's
rebirth requests) gets a `SourceLink` (`bind`): what it subscribes to is routed to its own
source and kept across reconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from paho.mqtt.client import topic_matches_sub

from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions, Parse, PayloadFormat
from sensord.ingest.formats._fields import TopicFormat
from sensord.ingest.settings import IngestSettings, MqttSettings, SourceSettings

_ROUTE_CACHE_MAX = 100_000
_DEVICES_MAX = 10_000

NATIVE = "sensord"  # the name of the source made of [mqtt] topics + topic_template


def specificity(topic_filter: str) -> tuple[int, int, int]:
    """Higher is more specific: no `#` beats `#`, then more literal levels, then more
    levels. `zigbee2mqtt/bridge/devices` > `zigbee2mqtt/+/availability` > `zigbee2mqtt/#`."""
    levels = topic_filter.split("/")
    literal = sum(1 for level in levels if level not in ("+", "#"))
    return (0 if levels[-1] == "#" else 1, literal, len(levels))


class Source:
    """One source at run time: its format, its filters and its counters."""

    __slots__ = (
        "devices",
        "dynamic",
        "filters",
        "format",
        "format_name",
        "labelled",
        "messages",
        "name",
        "parse",
        "qos",
        "readings",
        "refused",
    )

    def __init__(
        self, name: str, format_name: str, fmt: PayloadFormat, filters: list[str], qos: int
    ) -> None:
        self.name = name
        self.format_name = format_name
        self.format = fmt
        self.parse: Parse = fmt.parse  # bound: the per-message call goes straight in
        self.filters = filters
        self.dynamic: set[str] = set()  # what the format subscribed to on its own
        self.qos = qos
        self.messages = 0
        self.readings = 0
        self.refused = 0
        self.devices: set[tuple[str, str]] = set()  # (site, device) seen, bounded
        # the duplicate guard keys on the labels too, where the topic does not name the
        # sensor by itself (a Tasmota board's two thermometers on one topic)
        self.labelled = not isinstance(fmt, TopicFormat)

    @property
    def skipped(self) -> dict[str, int]:
        found = getattr(self.format, "skipped", None)
        return found if isinstance(found, dict) else {}

    def note_devices(self, readings: list[Reading]) -> None:
        """The devices of one message's readings (most messages: one device)."""
        devices = self.devices
        if len(devices) >= _DEVICES_MAX:
            return  # bounded
        first = readings[0]
        devices.add((first.site, first.device))
        if len(readings) > 1:
            for r in readings:
                if r.device != first.device or r.site != first.site:
                    devices.add((r.site, r.device))

    def summary(self) -> dict[str, Any]:
        """JSON-able: `GET /api/v1/sources`, `sensord sources`, the status page."""
        discovered = getattr(self.format, "discovered", None)
        return {
            "name": self.name,
            "format": self.format_name,
            "topics": [*self.filters, *sorted(self.dynamic)],
            "messages": self.messages,
            "readings": self.readings,
            "refused": self.refused,
            "skipped": dict(sorted(self.skipped.items())),
            "devices": [{"site": s, "device": d} for s, d in sorted(self.devices)],
            "discovered": discovered() if callable(discovered) else None,
        }


def build_sources(mqtt: MqttSettings, ingest: IngestSettings) -> list[Source]:
    """The native source (when `[mqtt] topics` names any) and one per `[[mqtt.sources]]`."""
    out: list[Source] = []
    if mqtt.topics:
        options = FormatOptions(
            mqtt.templates, mqtt.max_payload, ingest.units, ingest.max_clock_skew, source=NATIVE
        )
        out.append(
            Source(NATIVE, "sensord", formats.create("sensord", options), mqtt.topics, mqtt.qos)
        )
    for s in mqtt.sources:
        fmt = formats.create(s.format, source_options(s, mqtt, ingest))
        out.append(Source(s.source_name, s.format, fmt, topic_filters(s, fmt), _qos(s, mqtt)))
    return out


def source_options(s: SourceSettings, mqtt: MqttSettings, ingest: IngestSettings) -> FormatOptions:
    template = s.topic_template
    if template is None:  # the format's own default, else [mqtt]'s
        template = getattr(formats.get(s.format), "default_topic_template", None) or mqtt.templates
    return FormatOptions(
        template,
        mqtt.max_payload,
        ingest.units,
        ingest.max_clock_skew,
        options=s.options,
        source=s.source_name,
        site=s.site,
        max_sensors=s.max_sensors,
    )


def topic_filters(s: SourceSettings, fmt: PayloadFormat) -> list[str]:
    """The source's `topics`, else the format's defaults (which its options may shape)."""
    if s.topics is not None:
        return list(s.topics)
    return list(getattr(fmt, "default_topics", ()))


def _qos(s: SourceSettings, mqtt: MqttSettings) -> int:
    return int(s.qos) if s.qos is not None else int(mqtt.qos)


class Router:
    """Topic -> the source whose filter matches it most specifically (cached per topic)."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self.sources = list(sources)
        self._cache: dict[str, Source | None] = {}
        self._ranked: list[tuple[tuple[int, int, int], str, Source]] = []
        self._exact: dict[str, Source] = {}
        self.single: Source | None = None
        # what no filter matches goes to the first source whose format learns topics (a
        # persistent session still delivers what it subscribed to in an earlier run,
        # before the retained configs that name those topics again arrive)
        self.fallback = next(
            (s for s in self.sources if getattr(s.format, "learns_topics", False)), None
        )
        self.rebuild()

    def rebuild(self) -> None:
        """After a change of filters: wildcard filters ranked, exact topics in a dict (a
        discovery source may learn thousands: adding one is O(1), see `learn`)."""
        ranked = []
        self._exact.clear()
        for src in self.sources:
            for f in (*src.filters, *src.dynamic):
                if "+" in f or "#" in f:
                    ranked.append((specificity(f), f, src))
                else:
                    self._exact.setdefault(f, src)
        ranked.sort(key=lambda item: item[0], reverse=True)
        self._ranked = ranked
        self._cache.clear()
        self._single()

    def _single(self) -> None:
        # the one source, when there is only one and it learns no topics: no routing
        only = len(self.sources) == 1 and not self.sources[0].dynamic and not self.fallback
        self.single = self.sources[0] if only else None

    def learn(self, topic_filter: str, source: Source) -> None:
        if "+" in topic_filter or "#" in topic_filter:
            self.rebuild()
        else:
            self._exact.setdefault(topic_filter, source)
            self._cache.pop(topic_filter, None)
            self._single()

    def forget(self, topic_filter: str) -> None:
        if "+" in topic_filter or "#" in topic_filter:
            self.rebuild()
            return
        self._exact.pop(topic_filter, None)
        self._cache.pop(topic_filter, None)
        for src in self.sources:  # another source may want the same exact topic
            if topic_filter in src.filters or topic_filter in src.dynamic:
                self._exact[topic_filter] = src
                break
        self._single()

    def route(self, topic: str) -> Source | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found: Source | None = self._exact.get(topic)
        if found is not None:
            self._cache[topic] = found
            return found
        found = self.fallback
        for _rank, topic_filter, src in self._ranked:
            if topic_matches_sub(topic_filter, topic):
                found = src
                break
        if len(self._cache) >= _ROUTE_CACHE_MAX:
            self._cache.clear()  # bounded: a flood of random topics cannot grow memory
        self._cache[topic] = found
        return found

    def subscriptions(self) -> list[tuple[str, int]]:
        """Every filter to subscribe to, once each, with the highest QoS asked for it."""
        qos: dict[str, int] = {}
        for src in self.sources:
            for f in (*src.filters, *sorted(src.dynamic)):
                qos[f] = max(qos.get(f, 0), src.qos)
        return list(qos.items())


class Link:
    """A source's `SourceLink`: learned subscriptions go through the bridge's client."""

    def __init__(
        self,
        source: Source,
        router: Router,
        subscribe: Callable[[str, int], object],
        unsubscribe: Callable[[str], object],
        publish: Callable[[str, bytes, int, bool], object],
    ) -> None:
        self._source, self._router = source, router
        self._subscribe, self._unsubscribe, self._publish = subscribe, unsubscribe, publish

    def subscribe(self, topic_filter: str) -> None:
        if topic_filter in self._source.dynamic or topic_filter in self._source.filters:
            return
        self._source.dynamic.add(topic_filter)
        self._router.learn(topic_filter, self._source)
        self._subscribe(topic_filter, self._source.qos)

    def unsubscribe(self, topic_filter: str) -> None:
        if topic_filter not in self._source.dynamic:
            return
        self._source.dynamic.discard(topic_filter)
        self._router.forget(topic_filter)
        still_wanted = any(topic_filter in s.filters or topic_filter in s.dynamic
                           for s in self._router.sources)  # fmt: skip
        if not still_wanted:
            self._unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self._publish(topic, payload, qos, retain)
