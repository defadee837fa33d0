"""Format "influx": InfluxDB line protocol, what Telegraf's MQTT output and many scripts send.

https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/ :

    measurement[,tag=value…] field=value[,field=value…] [timestamp]

one line per point, several lines per message; `#` starts a comment line. Each numeric
field (float, integer `1i`, unsigned `1u`, boolean `t`/`true`/`F`/… as 1/0) is a reading;
a string field (`"…"`) is skipped (reason `text`). Backslash escapes `,` `=` ` ` `\\` `"`
in names and `"` `\\` in strings; a backslash before anything else is kept.

Identity: device = the `device_tag` tag (default `host`, the tag Telegraf puts on every
metric), else the topic's second level (Telegraf's `telegraf/{{ .Hostname }}/…`); site =
the `site_tag` tag (default `site`), else the source's site. Kind: the field's shared kind
(`self.kind(field)`), except a field named `value`, which takes the measurement's
(`temperature,host=a value=21` -> kind `temperature`). Labels (part of a sensor's identity):
`measurement` for a field other than `value` (so that `mem used` and `disk used` of one
host stay two sensors), and each tag listed in `label_tags`. See docs/formats/influx.md.

A line that does not parse is skipped and counted (reason `line`), the others kept; a
message of which no line parses is refused.
"""

from __future__ import annotations

import math

from sensord.events import Reading
from sensord.ingest.formats import FormatOptions, register
from sensord.ingest.formats._device import NO_LABELS, SKIP_TEXT, DeviceFormat

SKIP_LINE = "line"  # a line that is not line protocol

PRECISIONS = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000, "s": 1}
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_ESCAPABLE = frozenset(',= \\"')
_RESERVED_LABELS = frozenset({"site", "device", "kind", "measurement"})
_LABELS_MAX = 4096  # cached label dicts (measurement, label tag values): from the wire
_DIGITS = frozenset("0123456789")

# a parsed line: measurement, tags, fields (key, raw value, is a string), timestamp text
Line = tuple[str, dict[str, str], list[tuple[str, str, bool]], str]


class LineError(ValueError):
    """A line that is not line protocol; the message says why."""


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _split(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` not escaped by a backslash (escapes kept)."""
    if "\\" not in text:
        return text.split(sep)
    parts: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _key_end(line: str) -> int:
    """The index of the space that ends measurement and tags (escapes skipped)."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
        elif c == " ":
            return i
        else:
            i += 1
    raise LineError("no fields")


def _fields(line: str, i: int) -> tuple[list[tuple[str, str, bool]], int]:
    """The field set from `line[i:]`, and where it ends (quoted strings, escapes)."""
    fields: list[tuple[str, str, bool]] = []
    n = len(line)
    while True:
        start = i
        while i < n and line[i] != "=":
            c = line[i]
            if c == "\\":
                i += 2
                continue
            if c in ", ":
                raise LineError("a field without '='")
            i += 1
        if i >= n:
            raise LineError("a field without '='")
        key = _unescape(line[start:i])
        if not key:
            raise LineError("an empty field key")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and line[i] != '"':
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    buf.append(line[i + 1])
                    i += 2
                else:
                    buf.append(c)
                    i += 1
            if i >= n:
                raise LineError("an unterminated string")
            fields.append((key, "".join(buf), True))
            i += 1
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            fields.append((key, line[start:i], False))
        if i >= n or line[i] == " ":
            return fields, i
        i += 1  # ","
        if i >= n or line[i] == " ":
            raise LineError("a trailing comma")


def parse_line(line: str) -> Line:
    """One line -> (measurement, tags, fields, timestamp text or ""); LineError if malformed."""
    if "\\" not in line and '"' not in line:  # the usual line: plain splits
        parts = line.split(" ")
        if len(parts) == 2:
            key, field_set, ts = parts[0], parts[1], ""
        elif len(parts) == 3:
            key, field_set, ts = parts
        else:
            raise LineError("not 'measurement[,tags] fields [timestamp]'")
        fields: list[tuple[str, str, bool]] = []
        for pair in field_set.split(","):
            name, eq, raw = pair.partition("=")
            if not eq or not name:
                raise LineError("a field without 'key='")
            fields.append((name, raw, False))
    else:
        end = _key_end(line)
        key = line[:end]
        fields, end = _fields(line, end + 1)
        ts = line[end + 1 :] if end < len(line) else ""
        if " " in ts:
            raise LineError("text after the timestamp")
    head = _split(key, ",")
    measurement = _unescape(head[0])
    if not measurement:
        raise LineError("an empty measurement")
    tags: dict[str, str] = {}
    for pair in head[1:]:
        kv = _split(pair, "=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise LineError("a tag not 'key=value'")
        tags[_unescape(kv[0])] = _unescape(kv[1])
    return measurement, tags, fields, ts


def field_value(raw: str) -> float | None:
    """A field's number (booleans 1/0); None for a value that is not line protocol's."""
    if not raw:
        return None
    last = raw[-1]
    if last in "iu":
        digits = raw[:-1]
        if last == "i" and digits.startswith("-"):
            digits = digits[1:]
        if not digits or not _DIGITS.issuperset(digits):
            return None
        return float(int(raw[:-1]))
    if raw in _TRUE:
        return 1.0
    if raw in _FALSE:
        return 0.0
    if last not in "0123456789." or "_" in raw:  # float() takes nan, inf, 1_0: LP does not
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_line(
    line: str, divisor: int, now: float
) -> tuple[str, dict[str, str], list[tuple[str, float | None]], float]:
    """One line -> (measurement, tags, fields as numbers or None for strings, epoch seconds)."""
    measurement, tags, fields, ts_text = parse_line(line)
    if ts_text:
        if ts_text == "-" or not _DIGITS.issuperset(ts_text.removeprefix("-")):
            raise LineError(f"timestamp {ts_text[:30]!r} is not an integer")
        ts = int(ts_text) / divisor
    else:
        ts = now
    values: list[tuple[str, float | None]] = []
    for key, raw, is_text in fields:
        if is_text:
            values.append((key, None))
            continue
        value = field_value(raw)
        if value is None:
            raise LineError(f"field {key[:30]!r}: {raw[:30]!r} is not a value")
        values.append((key, value))
    return measurement, tags, values, ts


@register("influx")
class InfluxFormat(DeviceFormat):
    """InfluxDB line protocol; see the module docstring."""

    name = "influx"
    default_topics = ("telegraf/#",)
    OPTIONS = ("precision", "site_tag", "device_tag", "label_tags")

    def __init__(self, options: FormatOptions) -> None:
        super().__init__(options)
        for key in self.options:
            if key not in self.OPTIONS:
                raise ValueError(f"{key}: unknown influx option; known: {', '.join(self.OPTIONS)}")
        precision = self.options.get("precision", "ns")
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.divisor = PRECISIONS[str(precision)]
        self.site_tag = self._tag_option("site_tag", "site")
        self.device_tag = self._tag_option("device_tag", "host")
        label_tags = self.options.get("label_tags", [])
        if not isinstance(label_tags, list | tuple) or not all(
            isinstance(t, str) and t for t in label_tags
        ):
            raise ValueError("label_tags: must be a list of tag names")
        reserved = _RESERVED_LABELS.intersection(label_tags)
        if reserved:
            raise ValueError(f"label_tags: {', '.join(sorted(reserved))} is a reserved label")
        self.label_tags: tuple[str, ...] = tuple(label_tags)
        self._label_cache: dict[tuple[str, ...], dict[str, str]] = {}
        self._topic_devices: dict[str, str] = {}

    def _tag_option(self, key: str, default: str) -> str:
        value = self.options.get(key, default)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: must be a tag name")
        return value

    def _device_of(self, topic: str) -> str:
        """Without a device tag: the topic's second level (`telegraf/<host>/<plugin>`)."""
        found = self._topic_devices.get(topic)
        if found is None:
            levels = topic.split("/")
            found = levels[1] if len(levels) > 1 and levels[1] else topic
            if len(self._topic_devices) < _LABELS_MAX:
                self._topic_devices[topic] = found
        return found

    def _labels_of(self, measurement: str, tags: dict[str, str]) -> dict[str, str]:
        key = (measurement, *(tags.get(t, "") for t in self.label_tags))
        found = self._label_cache.get(key)
        if found is None:
            found = {"measurement": measurement} if measurement else {}
            for tag in self.label_tags:
                if tag in tags:
                    found[tag] = tags[tag]
            if len(self._label_cache) < _LABELS_MAX:
                self._label_cache[key] = found
        return found

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        self.check_size(payload)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("payload is not UTF-8 text") from None
        out: list[Reading] = []
        bad = good = 0
        why = ""
        for raw_line in text.split("\n"):
            line = raw_line.strip()
            if not line or line[0] == "#":
                continue
            try:
                measurement, tags, values, ts = read_line(line, self.divisor, now)
            except LineError as e:
                bad += 1
                why = why or str(e)
                continue
            good += 1
            if self.ahead(ts, now):
                continue
            site = tags.get(self.site_tag) or self.site
            device = tags.get(self.device_tag) or self._device_of(topic)
            for key, value in values:
                if value is None:
                    self.skip(SKIP_TEXT)
                    continue
                if key == "value":
                    kind = self.kind(measurement)
                    labels = self._labels_of("", tags) if self.label_tags else NO_LABELS
                else:
                    kind = self.kind(key)
                    labels = self._labels_of(measurement, tags)
                reading = self.reading(device, kind, value, ts, None, labels, site)
                if reading is not None:
                    out.append(reading)
        if bad:
            if not good:
                raise self.error(f"no line is line protocol ({why})")
            self.skip(SKIP_LINE, bad)
        return out
