"""`DeviceFormat`: the base of the device-ecosystem formats (Zigbee2MQTT, Tasmota, Shelly,
ESPHome, Home Assistant, Sparkplug, InfluxDB line protocol).

What they share, so that each module holds only its firmware's own shapes:

- the source: `self.source` (its name), `self.site` (the site label of readings whose
  topic or payload names none), `self.options` (the source's format-specific keys);
- the shared kinds (`sensord.ingest.kinds`): `self.kind(field_name)`;
- fields skipped without refusing the message, counted by reason in `self.skipped`
  (`sensord_fields_skipped_total{source,reason}`): `self.skip(reason)`. A message is
  refused (PayloadError) only when nothing in it can be read as the format (not JSON where
  JSON is due, not the shape the firmware sends); a text field, a null or a field of a unit
  that cannot be converted is skipped and counted, and the rest of the message is kept;
- `self.reading(...)`: one Reading, unit-converted per `[ingest.units]`, or None (skipped);
- the cap on learned sensors (discovery configs, Sparkplug births): `self.max_sensors`,
  `self.over_cap()` counts a refusal as skipped reason `sensor_cap`;
- `self.link` (a `SourceLink`, set by `bind` before connecting) for formats that subscribe
  to learned topics or publish (rebirth requests).

Identity: two physical sensors of one device stay two sensors by the label `sensor` (e.g.
Tasmota's `DS18B20` and `AM2301` on one board: device = the Tasmota topic, kind
`temperature`, labels `{"sensor": "DS18B20"}`); labels are part of a sensor's identity.
`self.labels(name)` gives the one shared dict per name (readings may share label dicts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import kinds
from sensord.ingest.formats import FormatOptions, SourceLink
from sensord.ingest.formats._fields import loads_json
from sensord.ingest.reasons import SCHEMA, TOO_LARGE
from sensord.ingest.units import Conversion

# skip reasons (sensord_fields_skipped_total{reason}); a format may add its own, snake_case,
# listed in docs/sources.md
SKIP_TEXT = "text"  # a text field that is not a number, a boolean or a known state word
SKIP_NULL = "null"
SKIP_NON_FINITE = "non_finite"
SKIP_UNIT = "unit"  # a unit that cannot be converted to the kind's [ingest.units] target
SKIP_NESTED = "nested"  # an object or array where a value is due, and the format knows none
SKIP_CAP = "sensor_cap"  # a learned sensor over the source's max_sensors
SKIP_CLOCK = "clock_skew"  # a timestamp too far ahead of the receive time

NO_LABELS: dict[str, str] = {}

# state words of booleans, as the ecosystems write them (ESPHome ON/OFF, Tasmota POWER,
# Home Assistant payload_on/off defaults, Zigbee2MQTT true/false)
_TRUE = frozenset({"on", "true", "online", "open", "detected", "yes", "1"})
_FALSE = frozenset({"off", "false", "offline", "closed", "clear", "no", "0"})


def state_word(text: str) -> float | None:
    """ON/OFF, online/offline, true/false … -> 1.0/0.0; None when it is no such word."""
    t = text.strip().lower()
    if t in _TRUE:
        return 1.0
    if t in _FALSE:
        return 0.0
    return None


class DeviceFormat:
    """Base of the device-ecosystem formats; see the module docstring."""

    name: ClassVar[str] = ""  # the registered name: prefix of every PayloadError detail
    default_topics: ClassVar[tuple[str, ...]] = ()  # the firmware's own topic filters
    own_kinds: ClassVar[dict[str, str]] = {}  # the firmware's field names -> shared kinds

    def __init__(self, options: FormatOptions) -> None:
        self.source = options.source
        self.site = options.site
        self.options: Mapping[str, object] = options.options
        self.max_payload = options.max_payload
        self.max_clock_skew = options.max_clock_skew
        self.max_sensors = options.max_sensors
        self.conversions = {kind: Conversion(unit) for kind, unit in options.units.items()}
        self.skipped: dict[str, int] = {}
        self.link: SourceLink | None = None
        self._kinds: dict[str, str] = {}
        self._labels: dict[str, dict[str, str]] = {}

    def bind(self, link: SourceLink) -> None:
        self.link = link

    # ---- helpers for parse()

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def over_cap(self, count: int) -> bool:
        """True (and counted) when `count` learned sensors already reach the cap."""
        if count >= self.max_sensors:
            self.skip(SKIP_CAP)
            return True
        return False

    def error(self, detail: str, reason: str = SCHEMA) -> PayloadError:
        return PayloadError(reason, f"{self.name}: {detail}")

    def check_size(self, payload: bytes | bytearray) -> None:
        if len(payload) > self.max_payload:
            raise PayloadError(TOO_LARGE, f"{self.name}: {len(payload)} bytes > {self.max_payload}")

    def json(self, payload: bytes | bytearray) -> object:
        self.check_size(payload)
        return loads_json(payload, f"{self.name}: payload is not JSON")

    def json_object(self, payload: bytes | bytearray) -> dict[str, object]:
        data = self.json(payload)
        if not isinstance(data, dict):
            raise self.error(f"expected a JSON object, got {type(data).__name__}")
        return data

    def kind(self, field: str) -> str:
        """The shared kind of a field name (cached per spelling)."""
        found = self._kinds.get(field)
        if found is None:
            found = kinds.kind_of(field, self.own_kinds)
            if len(self._kinds) < 4096:  # bounded: field names come from the wire
                self._kinds[field] = found
        return found

    def labels(self, sensor: str) -> dict[str, str]:
        """The one `{"sensor": name}` dict per name (or none for "")."""
        if not sensor:
            return NO_LABELS
        found = self._labels.get(sensor)
        if found is None:
            found = {"sensor": sensor}
            if len(self._labels) < self.max_sensors:
                self._labels[sensor] = found
        return found

    def value(self, raw: object) -> float | None:
        """A field's value as a float: numbers, booleans (1/0) and state words (ON/OFF …);
        None after counting why it was skipped (text, null, non-finite, nested)."""
        if isinstance(raw, bool):
            return 1.0 if raw else 0.0
        if isinstance(raw, int | float):
            try:
                value = float(raw)
            except OverflowError:
                self.skip(SKIP_NON_FINITE)
                return None
            if math.isfinite(value):
                return value
            self.skip(SKIP_NON_FINITE)
            return None
        if isinstance(raw, str):
            word = state_word(raw)
            if word is not None:
                return word
            try:
                value = float(raw)
            except ValueError:
                self.skip(SKIP_TEXT)
                return None
            if math.isfinite(value):
                return value
            self.skip(SKIP_NON_FINITE)
            return None
        if raw is None:
            self.skip(SKIP_NULL)
            return None
        self.skip(SKIP_NESTED)
        return None

    def reading(  # noqa: PLR0917 - positional on purpose: the hot path
        self,
        device: str,
        kind: str,
        value: float,
        ts: float,
        unit: str | None = None,
        labels: dict[str, str] = NO_LABELS,
        site: str | None = None,
    ) -> Reading | None:
        """One Reading; `unit` None means the kind's usual unit (kinds.KINDS), if any.

        Converted per `[ingest.units]`; a unit that cannot be converted skips the field
        (reason `unit`) and returns None."""
        if unit is None:
            unit = kinds.KINDS.get(kind)
        conversion = self.conversions.get(kind) if self.conversions else None
        if conversion is not None:
            if unit is None:
                unit = conversion.target.name
            else:
                factors = conversion.factors(unit)
                if factors is None:
                    self.skip(SKIP_UNIT)
                    return None
                value = value * factors[0] + factors[1]
                unit = conversion.target.name
        return Reading.trusted(site or self.site, device, kind, value, ts, labels, unit)

    def ahead(self, ts: float, now: float) -> bool:
        """True (and counted as skipped `clock_skew`) when `ts` is too far in the future."""
        if ts - now > self.max_clock_skew:
            self.skip(SKIP_CLOCK)
            return True
        return False
