"""The latest value of each sensor on /metrics, read at scrape time.

`SensorGauges` is a prometheus_client collector over the status page's `History`
(sensord/http/history.py), which keeps every sensor's last value, unit and receive time
anyway: nothing is added to the per-reading path. At each scrape:

- `sensord_sensor_value{site,device,kind,unit}`: the last value (the newest by the
  reading's own timestamp); `unit` is "" for a reading without one;
- `sensord_sensor_last_seen_seconds{site,device,kind}`: when sensord last received a
  reading of the sensor, epoch seconds;
- series of sensors silent for longer than `prometheus_stale` are left out, and at most
  `prometheus_max_series` sensors are exposed (the most recently seen);
  `sensord_sensor_series_omitted` says how many were left out by that bound.

Two sensors that differ only by labels beyond site/device/kind share one series (the
most recently seen of them): Prometheus refuses a scrape with duplicate series.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sensord.http.history import History, SensorSeries


class SensorGauges(Collector):
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

    def _series(self) -> tuple[list[SensorSeries], int]:
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
        return heapq.nlargest(self._max, fresh.values(), key=lambda s: s.seen), len(
            fresh
        ) - self._max

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = GaugeMetricFamily(
            "sensord_sensor_value",
            "Latest value of each sensor (by its reading's timestamp)",
            labels=["site", "device", "kind", "unit"],
        )
        seen = GaugeMetricFamily(
            "sensord_sensor_last_seen_seconds",
            "When sensord last received a reading of the sensor, epoch seconds",
            labels=["site", "device", "kind"],
        )
        series, omitted = self._series()
        for s in series:
            site, device, kind = s.key[:3]
            value.add_metric([site, device, kind, s.unit or ""], s.value)
            seen.add_metric([site, device, kind], s.seen)
        yield value
        yield seen
        yield GaugeMetricFamily(
            "sensord_sensor_series_omitted",
            "Fresh sensors left out of sensord_sensor_value by [telemetry] prometheus_max_series",
            value=omitted,
        )
