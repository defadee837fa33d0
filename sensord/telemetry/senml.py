"""The stream's message body: a batch of readings as one SenML JSON pack (RFC 8428).

One record per reading, each complete in itself (a reader may take any record alone):

    {"bn": "<site>/<device>/", "n": "<kind>", "v": 21.5, "u": "Cel", "t": 1764762000.25,
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

Encoding is on the flush task, never on the per-reading path; names are escaped once
per distinct site/device, kind and unit (bounded caches).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sensord.events import Reading

CONTENT_TYPE = "application/senml+json"
_CACHE_MAX = 50_000
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class PackEncoder:
    """Readings -> one SenML JSON pack (bytes)."""

    def __init__(self) -> None:
        self._bn: dict[tuple[str, str], str] = {}
        self._n: dict[str, str] = {}
        self._u: dict[str, str] = {}

    def _head(self, site: str, device: str, kind: str) -> str:
        bn = self._bn.get((site, device))
        if bn is None:
            if len(self._bn) > _CACHE_MAX:
                self._bn.clear()
            bn = self._bn[site, device] = '{"bn":' + _dumps(f"{site}/{device}/")
        n = self._n.get(kind)
        if n is None:
            if len(self._n) > _CACHE_MAX:
                self._n.clear()
            n = self._n[kind] = ',"n":' + _dumps(kind)
        return bn + n

    def _unit(self, unit: str) -> str:
        u = self._u.get(unit)
        if u is None:
            if len(self._u) > _CACHE_MAX:
                self._u.clear()
            u = self._u[unit] = ',"u":' + _dumps(unit)
        return u

    def encode(self, readings: Iterable[Reading]) -> bytes:
        out = []
        head, unit_of = self._head, self._unit
        for r in readings:
            f = r.__dict__  # the fields as the engine reads them: no pydantic accessors
            value = f["value"]
            if type(value) is not float:
                value = float(value)
            rec = f'{head(f["site"], f["device"], f["kind"])},"v":{value!r},"t":{f["ts"]!r}'
            unit = f["unit"]
            if unit is not None:
                rec += unit_of(unit)
            labels = f["labels"]
            if labels:
                rec += ',"labels":' + _dumps(labels)
            out.append(rec + "}")
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
