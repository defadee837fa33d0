"""Payload formats of the readings contract: JSON object, bare number, SenML (RFC 8428).

Formatted by hand: ``json.dumps`` costs more than the rest of a reading put together, and
every value is a float already rounded by the physics, whose ``repr`` is valid JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulators.physics import SensorModel


class Format(enum.StrEnum):
    """``--format``."""

    JSON = "json"
    NUMBER = "number"
    SENML = "senml"


class Encoder:
    """Turns (sensor, value, timestamp) into payload bytes in one format."""

    __slots__ = ("encode", "fmt", "topic_root")

    def __init__(self, fmt: Format, topic_root: str) -> None:
        self.fmt = fmt
        self.topic_root = topic_root
        # Chosen once: this runs for every message.
        self.encode: Callable[[SensorModel, float, int], bytes] = {
            Format.JSON: self._json,
            Format.NUMBER: self._number,
            Format.SENML: self._senml,
        }[fmt]

    @staticmethod
    def _json(sensor: SensorModel, value: float, ts_ms: int) -> bytes:
        spec = sensor.spec
        if spec.unit is not None and not spec.boolean:  # the common case, inlined
            return f'{{"value": {value!r}, "ts": {ts_ms}, "unit": "{spec.unit}"}}'.encode()
        return json_payload(value, ts_ms, spec.unit, boolean=spec.boolean)

    @staticmethod
    def _number(sensor: SensorModel, value: float, ts_ms: int) -> bytes:
        return (str(int(value)) if sensor.spec.boolean else repr(value)).encode()

    def _senml(self, sensor: SensorModel, value: float, ts_ms: int) -> bytes:
        spec = sensor.spec
        base = f'[{{"bn": "{self.topic_root}/{sensor.site}/{sensor.device}/", "n": "{spec.kind}", '
        t = ts_ms / 1000
        if spec.boolean:
            return f'{base}"vb": {"true" if value else "false"}, "t": {t!r}}}]'.encode()
        v = round(value * spec.senml_scale, 4) if spec.senml_scale != 1.0 else value
        return f'{base}"v": {v!r}, "u": "{spec.senml_unit}", "t": {t!r}}}]'.encode()


def json_payload(value: float, ts_ms: int, unit: str | None, *, boolean: bool = False) -> bytes:
    """``{"value": 21.5, "ts": 1764000000123, "unit": "C"}``; a contact's value is 0 or 1."""
    if boolean:
        return f'{{"value": {int(value)}, "ts": {ts_ms}}}'.encode()
    if unit is None:
        return f'{{"value": {value!r}, "ts": {ts_ms}}}'.encode()
    return f'{{"value": {value!r}, "ts": {ts_ms}, "unit": "{unit}"}}'.encode()
