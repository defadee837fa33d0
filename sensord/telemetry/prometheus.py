"""The latest value of each sensor on /metrics, read at scrape time.

`SensorGauges` reads the status page's `History` (sensord/http/history.py), which keeps
every sensor's last value, unit and receive time anyway: nothing is added to the
per-reading path. At each scrape:

- `sensord_sensor_value{site,device,kind,unit}`: the last value (the newest by the
  reading's own timestamp); `unit` is "" for a reading without one;
- `sensord_sensor_last_seen_seconds{site,device,kind}`: when sensord last received a
  reading of the sensor, epoch seconds;
- series of sensors silent for longer than `prometheus_stale` are left out, and at most
  `prometheus_max_series` sensors are exposed (the most recently seen);
  `sensord_sensor_series_omitted` says how many were left out by that bound.

Two sensors that differ only by labels beyond site/device/kind share one series (the
most recently seen of them): Prometheus refuses a scrape with duplicate series.

It writes the text exposition format itself rather than through a prometheus_client
collector: measured here at 10,000 sensors (2 MB of text), the collector's samples plus
`generate_latest` took 0.6-0.9 s of the event loop per scrape, this 35-55 ms (the label
part of each line is escaped once per sensor and cached). `render` is
appended to the registry's output by the /metrics handler (`Metrics.expositions`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

from sensord.http.history import History, SensorSeries

_HEAD = (
    "# HELP sensord_sensor_value Latest value of each sensor (by its reading's timestamp)\n"
    "# TYPE sensord_sensor_value gauge\n"
)
_SEEN_HEAD = (
    "# HELP sensord_sensor_last_seen_seconds When sensord last received a reading of the"
    " sensor, epoch seconds\n"
    "# TYPE sensord_sensor_last_seen_seconds gauge\n"
)
_OMITTED_HEAD = (
    "# HELP sensord_sensor_series_omitted Fresh sensors left out of sensord_sensor_value by"
    " [telemetry] prometheus_max_series\n"
    "# TYPE sensord_sensor_series_omitted gauge\n"
)
_CACHE_MAX = 200_000


def _escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class SensorGauges:
    def __init__(
        self,
        history: History,
        max_series: int,
        stale: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._history = history
        self._max = max_series
        self._stale = stale
        self._clock = clock
        # (site, device, kind) -> its escaped label set; (… , unit) -> the value's
        self._labels: dict[tuple[str, ...], str] = {}
        self._value_labels: dict[tuple[tuple[str, ...], str], str] = {}

    def series(self) -> tuple[list[SensorSeries], int]:
        """The fresh series, one per (site, device, kind), the newest first past the bound."""
        oldest = self._clock() - self._stale
        fresh: dict[tuple[str, ...], SensorSeries] = {}
        for s in self._history:
            if s.seen < oldest or math.isnan(s.value):
                continue
            key = s.key[:3]
            other = fresh.get(key)
            if other is None or s.seen > other.seen:
                fresh[key] = s
        if len(fresh) <= self._max:
            return list(fresh.values()), 0
        newest = heapq.nlargest(self._max, fresh.values(), key=lambda s: s.seen)
        return newest, len(fresh) - self._max

    def _label_text(self, key: tuple[str, ...]) -> str:
        text = self._labels.get(key)
        if text is None:
            if len(self._labels) > _CACHE_MAX:
                self._labels.clear()
            site, device, kind = key
            text = self._labels[key] = (
                f'site="{_escape(site)}",device="{_escape(device)}",kind="{_escape(kind)}"'
            )
        return text

    def _value_label_text(self, key: tuple[str, ...], unit: str) -> str:
        text = self._value_labels.get((key, unit))
        if text is None:
            if len(self._value_labels) > _CACHE_MAX:
                self._value_labels.clear()
            text = self._value_labels[key, unit] = f'{self._label_text(key)},unit="{_escape(unit)}"'
        return text

    def render(self) -> bytes:
        """The three families in the Prometheus text format (0.0.4)."""
        series, omitted = self.series()
        values = [_HEAD]
        seen = [_SEEN_HEAD]
        for s in series:
            key = s.key[:3]
            values.append(
                f"sensord_sensor_value{{{self._value_label_text(key, s.unit or '')}}} "
                f"{float(s.value)!r}\n"
            )
            seen.append(f"sensord_sensor_last_seen_seconds{{{self._label_text(key)}}} {s.seen!r}\n")
        omitted_line = f"sensord_sensor_series_omitted {float(omitted)!r}\n"
        return "".join([*values, *seen, _OMITTED_HEAD, omitted_line]).encode()
