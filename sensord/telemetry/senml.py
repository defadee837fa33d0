"""The stream's message body: a batch of readings as one SenML JSON pack (RFC 8428).

One record per reading, each complete in itself (a reader may take any record alone):

    {"bn": "<site>/<device>/", "n": "<kind>", "u": "Cel", "v": 21.5, "t": 1764762000.25,
     "labels": {"room": "a"}}

- `bn` (base name) is repeated on every record although RFC 8428 §4.5 would let it carry
  over: tools that read one record at a time (Telegraf's json_v2, jq) need no state.
  bn + n is the SenML name `site/device/kind`; topic segments never contain a slash.
- `t` is absolute, epoch seconds (§4.5.3: a value above 2**28 is absolute).
- `u` only when the reading has a unit.
- `labels`: the labels beyond site, device and kind, as a JSON object of strings, only
  when there are any. An extension field whose name does not end with `_`: §4.4 lets a
  receiver that does not know it ignore it, so every SenML reader still reads the pack
  (sensord's own `senml` format does). No AMQP header carries per-reading labels: one
  message holds many sensors.

Encoding is on the stream's sender task, never on the per-reading path; each record's
text up to the value is built once per distinct (site, device, kind, unit), bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sensord.events import Reading

CONTENT_TYPE = "application/senml+json"
_CACHE_MAX = 50_000
_VALUES_MAX = 4096
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class PackEncoder:
    """Readings -> one SenML JSON pack (bytes)."""

    def __init__(self) -> None:
        # (site, device, kind, unit) -> the record's text up to the value
        self._heads: dict[tuple[str, str, str, str | None], str] = {}
        self._values: dict[float, str] = {}

    def _head(self, key: tuple[str, str, str, str | None]) -> str:
        if len(self._heads) > _CACHE_MAX:
            self._heads.clear()
        site, device, kind, unit = key
        head = '{"bn":' + _dumps(f"{site}/{device}/") + ',"n":' + _dumps(kind)
        if unit is not None:
            head += ',"u":' + _dumps(unit)
        self._heads[key] = head
        return head

    def encode(self, readings: Iterable[Reading]) -> bytes:
        """One record per reading. The float -> shortest text conversions are most of the
        cost (~0.5 us each, more on a busy host): sensor values repeat (a few hundred
        distinct ones per kind is common), so their text is cached; consecutive readings
        often share a timestamp (the receive time), so its text is reused."""
        out = []
        heads = self._heads
        values = self._values
        if len(values) > _VALUES_MAX:
            values.clear()
        last_ts, last_t = None, ""
        for r in readings:
            f = r.__dict__  # the fields as the engine reads them: no pydantic accessors
            key = (f["site"], f["device"], f["kind"], f["unit"])
            head = heads.get(key) or self._head(key)
            value = f["value"]
            v = values.get(value)
            if v is None:
                v = values[value] = repr(float(value))
            ts = f["ts"]
            if ts != last_ts:
                last_ts, last_t = ts, repr(ts)
            labels = f["labels"]
            if labels:
                out.append(f'{head},"v":{v},"t":{last_t},"labels":{_dumps(labels)}}}')
            else:
                out.append(f'{head},"v":{v},"t":{last_t}}}')
        return ("[" + ",".join(out) + "]").encode()


@dataclass(frozen=True, slots=True)
class StreamReading:
    """One record of a pack read back (`sensord readings tail`, tests)."""

    site: str
    device: str
    kind: str
    value: float
    ts: float
    unit: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "device": self.device,
            "kind": self.kind,
            "value": self.value,
            "unit": self.unit,
            "ts": self.ts,
            "labels": self.labels,
        }


def decode(body: bytes) -> list[StreamReading]:
    """A SenML JSON pack of the stream -> readings, base fields resolved (RFC 8428 §4.6).
    Records without a numeric value or a `site/device/kind` name are skipped."""
    records = json.loads(body)
    if not isinstance(records, list):
        raise ValueError("a SenML pack is a JSON array")
    out: list[StreamReading] = []
    bn, bt, bu = "", 0.0, None
    for rec in records:
        if not isinstance(rec, dict):
            continue
        bn = rec.get("bn", bn)
        bt = float(rec.get("bt", bt))
        bu = rec.get("bu", bu)
        value = rec.get("v")
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        parts = (str(bn) + str(rec.get("n", ""))).split("/")
        if len(parts) != 3 or not all(parts):
            continue
        t = bt + float(rec.get("t", 0.0))
        labels = rec.get("labels")
        out.append(
            StreamReading(
                parts[0],
                parts[1],
                parts[2],
                float(value),
                t,
                rec.get("u", bu),
                dict(labels) if isinstance(labels, dict) else {},
            )
        )
    return out
