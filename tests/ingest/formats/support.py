"""What the format tests share: building a format, the refusal and reading checks, the
recursive JSON strategy of the fuzz tests and a fake SourceLink."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import pytest
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions, PayloadFormat

F = TypeVar("F")


def create(name: str, cls: type[F], /, **options: object) -> F:
    """The format `name`, of class `cls`; of the test's options `units`, `max_sensors`,
    `site` (default "home") and `source` (default "mqtt") go to FormatOptions, the rest
    are the format's own keys."""
    site = str(options.pop("site", "home"))
    source = str(options.pop("source", "mqtt"))
    units = options.pop("units", {})
    max_sensors = options.pop("max_sensors", 10_000)
    assert isinstance(units, dict)
    assert isinstance(max_sensors, int)
    fmt = formats.create(
        name,
        FormatOptions(
            "",
            65_536,
            units=units,
            options=options,
            source=source,
            site=site,
            max_sensors=max_sensors,
        ),
    )
    assert isinstance(fmt, cls)
    return fmt


def refused(fmt: PayloadFormat, topic: str, payload: bytes, now: float, name: str) -> PayloadError:
    """The PayloadError that parsing must raise, after checking its detail names the format."""
    with pytest.raises(PayloadError) as info:
        fmt.parse(topic, payload, now)
    assert info.value.detail.startswith(f"{name}: ")
    return info.value


def parse_or_refused(
    fmt: PayloadFormat, topic: str, payload: bytes, now: float, name: str
) -> list[Reading]:
    """The readings, or [] after checking that a refusal's detail names the format."""
    try:
        return fmt.parse(topic, payload, now)
    except PayloadError as e:
        detail = e.detail
    assert detail.startswith(f"{name}: ")
    return []


def check_readings(
    readings: Iterable[Reading],
    *,
    finite_ts: bool = False,
    nonempty_device: bool = False,
    nonempty_kind: bool = False,
) -> None:
    """Every reading has a finite value and str site, device and kind (and, when asked, a
    finite ts, a non-empty device, a non-empty kind)."""
    for r in readings:
        assert math.isfinite(r.value)
        if finite_ts:
            assert math.isfinite(r.ts)
        assert isinstance(r.site, str)
        assert isinstance(r.device, str)
        if nonempty_device:
            assert r.device
        assert isinstance(r.kind, str)
        if nonempty_kind:
            assert r.kind


def json_values(
    *, text_size: int = 8, dict_size: int = 4, max_leaves: int = 20
) -> st.SearchStrategy[object]:
    """Any JSON document: null, booleans, integers, floats (NaN and infinities too), short
    text, nested in lists and objects."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=text_size),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=8), inner, max_size=dict_size)
        ),
        max_leaves=max_leaves,
    )


JSON_VALUES = json_values()


class FakeLink:
    """The bridge's side of `bind`: records what the format subscribes to, unsubscribes from
    and publishes; `silent` names a format that must publish nothing."""

    def __init__(self, silent: str = "") -> None:
        self.silent = silent
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []
        self.published: list[tuple[str, bytes, int, bool]] = []

    @property
    def active(self) -> set[str]:
        """The filters subscribed and not since unsubscribed."""
        out: set[str] = set()
        for t in self.subscribed:
            out.add(t)
        for t in self.unsubscribed:
            out.discard(t)
        return out

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.append(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribed.append(topic_filter)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.silent:
            raise AssertionError(f"{self.silent} publishes nothing")
        self.published.append((topic, payload, qos, retain))
