"""Payload formats, registered by name: bytes off MQTT -> Readings.

Telegraf's `map[name]Creator` (CONVENTIONS.md): each module of this package registers the
formats it defines; `get(name)` finds one, and an unknown name is an error that lists the
known ones. Today: "sensord" (native.py: a `{"value": …}` object, a bare number or a SenML
pack, told apart by shape) and "senml" (senml.py: RFC 8428 packs only).

How to add a format
-------------------
1. Write one module, `sensord/ingest/formats/<name>.py`, named as the format. It is
   imported when a source first asks for its format (`get`); `names()` and an unknown name
   import every module here whose name does not start with `_`, so nothing else lists it.
   (Importing them all with the package cost ~0.2 s of every start: Sparkplug's protobuf,
   Home Assistant's Jinja. The native format "sensord" is the one in native.py.)
2. In it, a class (or any callable) that takes `FormatOptions` and returns an object with
   `parse(topic: str, payload: bytes | bytearray, now: float) -> list[Reading]`, decorated
   with `@register("<name>")`. `parse` returns one Reading or many (one per field or
   record), or raises `PayloadError(reason, detail)` with a code of
   `sensord.ingest.reasons` and a detail that names the format and what is wrong.
   `now` is the receive time: the Readings' time when the payload carries none.
3. Topic-named formats subclass `_fields.TopicFormat` (topic templates, payload size,
   clock skew, `[ingest.units]` conversion); `_fields` also holds the checks of numbers,
   units and timestamps that every format shares, with their reason codes and texts.
   Format-specific settings arrive in `FormatOptions.options`.
4. Device ecosystems (Zigbee2MQTT, Tasmota, …) subclass `_device.DeviceFormat`: the
   source's site, the shared kinds (`sensord.ingest.kinds`), skipped-field counting, the
   learned-sensor cap and the unit conversions. See its docstring.
5. Tests in `tests/ingest/formats/` (payloads from the firmware's own docs, the source named
   beside each fixture, malformed variants, a fuzz), and a section in docs/sources.md.

`parse` is THE per-message hot path: build what can be built once (templates, conversions,
compiled templates) in `__init__`, keep `parse` flat (no call layers per message that a
local would do, no copies of the payload), never log from it (the bridge counts and logs
refusals, rate-limited), and measure with `python -m bench` before and after.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sensord.errors import SensordError
from sensord.events import Reading


@dataclass(frozen=True, slots=True)
class FormatOptions:
    """What a format is built from: the source's settings, validated by the config."""

    topic_template: str | Sequence[str]  # topic -> site/device/kind, for topic-named formats
    max_payload: int  # bytes; larger payloads are refused as too_large
    units: Mapping[str, str] = field(default_factory=dict)  # kind -> unit converted to
    max_clock_skew: float = 300.0  # seconds a timestamp may run ahead of the receive time
    options: Mapping[str, object] = field(default_factory=dict)  # the format's own keys
    source: str = "mqtt"  # the source's name: logs, metrics, quarantine details
    site: str = "default"  # the site label of readings whose topic or payload names none
    max_sensors: int = 10_000  # sensors a format may learn (discovery, births); then counted


class SourceLink(Protocol):
    """What a format that learns topics or answers devices gets from the bridge (`bind`):
    a subscription added here is routed to the format's source and kept across reconnects;
    `publish` sends on sensord's own MQTT connection (e.g. a Sparkplug rebirth request)."""

    def subscribe(self, topic_filter: str) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None: ...


class PayloadFormat(Protocol):
    """Required: `parse`. Optional, looked up with getattr by the bridge:
    `default_topics` (attribute, tuple of filters: the firmware's own, used when the
    source names none), `skipped` (dict reason -> count of fields skipped without refusing
    the message: `sensord_fields_skipped_total{source,reason}`), `bind(link: SourceLink)`
    (called once before connecting, for formats that subscribe or publish on their own) and
    `discovered()` (a JSON-able summary of what the format learned, for `sensord sources`)."""

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]: ...


class Parse(Protocol):
    """A format's bound `parse`, as the bridge calls it."""

    def __call__(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]: ...


FormatFactory = Callable[[FormatOptions], PayloadFormat]
_Factory = TypeVar("_Factory", bound=FormatFactory)

_FORMATS: dict[str, FormatFactory] = {}


class UnknownFormatError(SensordError, ValueError):
    """No format of that name; a ValueError too, so that a config validator reports it."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown payload format {name!r}; known formats: {', '.join(self.known)}")


def register(name: str) -> Callable[[_Factory], _Factory]:
    """Class decorator: make the format known as `name`."""

    def add(factory: _Factory) -> _Factory:
        if name in _FORMATS:
            raise ValueError(f"payload format {name!r} is registered twice")
        _FORMATS[name] = factory
        return factory

    return add


def names() -> tuple[str, ...]:
    """The registered formats, sorted (every format module imported)."""
    _import_formats()
    return tuple(sorted(_FORMATS))


def get(name: str) -> FormatFactory:
    """The factory registered as `name` (its module imported first, if need be: see the
    module doc); UnknownFormatError lists the known names."""
    factory = _FORMATS.get(name)
    if factory is None:
        module = _MODULE_OF.get(name, name)
        if module in _modules():
            importlib.import_module(f"{__name__}.{module}")
            factory = _FORMATS.get(name)
    if factory is None:
        _import_formats()  # a format whose module is named otherwise, or none
        factory = _FORMATS.get(name)
    if factory is None:
        raise UnknownFormatError(name, names())
    return factory


def create(name: str, options: FormatOptions) -> PayloadFormat:
    return get(name)(options)


_MODULE_OF = {"sensord": "native"}  # the one format whose module is not named as it is
_MODULES: frozenset[str] | None = None


def _modules() -> frozenset[str]:
    """The format modules of this package (`_`-prefixed modules are helpers)."""
    global _MODULES  # noqa: PLW0603 - listed once, on first use
    if _MODULES is None:
        _MODULES = frozenset(
            m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
        )
    return _MODULES


def _import_formats() -> None:
    # the registry is filled by each module's @register
    for module in sorted(_modules()):
        importlib.import_module(f"{__name__}.{module}")
