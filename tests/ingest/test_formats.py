"""The payload-format registry (sensord/ingest/formats/) and the "senml" format."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import pytest

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions, UnknownFormatError
from sensord.ingest.formats.native import NativeFormat
from sensord.ingest.formats.senml import SenmlFormat
from sensord.ingest.payload import NOT_JSON, SCHEMA, TOO_LARGE, TOPIC, PayloadParser

TEMPLATE = "sensors/{site}/{device}/{kind}"
TOPIC_NAME = "sensors/plant-1/t-7/temperature"
NOW = 1_800_000_000.0
PACK = b'[{"bn": "urn:dev:ow:10e2073a:", "bt": 1800000000, "bu": "Cel", "n": "temp", "v": 21.5},'
PACK += b' {"n": "humidity", "u": "%RH", "v": 40, "t": 1}]'


# the formats of the sources contract (ARCHITECTURE.md, docs/sources.md)
CONTRACT = (
    "esphome", "homeassistant", "influx", "senml", "sensord", "shelly", "sparkplug",
    "tasmota", "zigbee2mqtt",
)  # fmt: skip


def test_the_contracts_formats_are_registered_by_name() -> None:
    assert formats.names() == CONTRACT
    assert formats.get("sensord") is NativeFormat
    assert formats.get("senml") is SenmlFormat


def test_an_unknown_format_is_an_error_that_lists_the_known_ones() -> None:
    known = ", ".join(CONTRACT)
    with pytest.raises(UnknownFormatError) as info:
        formats.get("zigbee3000")
    assert str(info.value) == f"unknown payload format 'zigbee3000'; known formats: {known}"
    assert info.value.known == CONTRACT
    assert isinstance(info.value, ValueError)  # a pydantic validator turns it into a key error
    with pytest.raises(UnknownFormatError, match=f"known formats: {known}"):
        PayloadParser(TEMPLATE, 1024, payload_format="lorawan")


def test_every_public_module_of_the_package_registers_a_format() -> None:
    """A format is one module: the package imports each, and each one registers."""
    registered = {formats.get(name).__module__ for name in formats.names()}
    modules = {
        f"{formats.__name__}.{m.name}"
        for m in pkgutil.iter_modules(formats.__path__)
        if not m.name.startswith("_")
    }
    assert modules == registered


def test_a_format_module_is_imported_when_its_format_is_asked_for() -> None:
    """The daemon imports only the formats its sources name (the others cost ~0.2 s of
    every start: Sparkplug's protobuf, Home Assistant's Jinja); `names()` imports all.
    In a fresh interpreter: this one has imported every format already."""
    script = textwrap.dedent(
        """
        import sys
        import sensord.app, sensord.cli.main
        from sensord.ingest import formats

        def loaded():
            prefix = formats.__name__ + "."
            return sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix))

        print(loaded())
        formats.get("sensord")
        print(loaded())
        formats.get("tasmota")
        print(loaded())
        print("google.protobuf" in sys.modules, "jinja2" in sys.modules)
        print(len(formats.names()), "google.protobuf" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # the bridge's own helpers: the shared field checks, and SenML (packs in the native
    # format) for the topic-named Readings
    assert out[0] == "['_fields', 'senml']"
    assert out[1] == "['_fields', 'native', 'senml']"
    assert out[2] == "['_device', '_fields', 'native', 'senml', 'tasmota']"
    assert out[3] == "False False"
    assert out[4] == f"{len(CONTRACT)} True"


class Doubling:
    """A format of test's own: a bare number, doubled, for kind `x` of device `d`."""

    def __init__(self, options: FormatOptions) -> None:
        self.factor = float(str(options.options.get("factor", 2)))

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        return [Reading.trusted("s", "d", "x", float(payload) * self.factor, now, {}, None)]


def test_a_registered_format_is_what_the_parser_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # every format module imported first: one imported under the copy would register
    # in it alone, and be unknown once the copy is undone (modules import once)
    formats.names()
    monkeypatch.setattr(formats, "_FORMATS", dict(formats._FORMATS))  # undone after the test
    assert formats.register("doubling")(Doubling) is Doubling
    assert "doubling" in formats.names()
    parser = PayloadParser(TEMPLATE, 1024, payload_format="doubling")
    (reading,) = parser.parse("any/topic", b"21", NOW)
    assert (reading.device, reading.value) == ("d", 42.0)
    with pytest.raises(ValueError, match="'doubling' is registered twice"):
        formats.register("doubling")(Doubling)
    created = formats.create("doubling", FormatOptions(TEMPLATE, 1024, options={"factor": 3}))
    assert isinstance(created, Doubling)
    assert created.factor == 3.0


def test_the_parser_hands_out_the_formats_own_parse() -> None:
    """No call layer between the bridge and the format, per message."""
    parser = PayloadParser(TEMPLATE, 1024)
    assert isinstance(parser.format, NativeFormat)
    assert parser.parse.__func__ is NativeFormat.parse  # type: ignore[attr-defined]  # bound
    assert parser.parse.__self__ is parser.format  # type: ignore[attr-defined]  # method


def test_senml_format_reads_a_pack_as_the_sensord_format_does() -> None:
    units = {"temperature": "C"}
    senml = PayloadParser(TEMPLATE, 1024, units=units, payload_format="senml")
    native = PayloadParser(TEMPLATE, 1024, units=units)
    got = senml.parse(TOPIC_NAME, PACK, NOW)
    assert got == native.parse(TOPIC_NAME, PACK, NOW)
    assert [(r.device, r.kind, r.value, r.ts, r.unit) for r in got] == [
        ("urn:dev:ow:10e2073a", "temp", 21.5, NOW, "Cel"),
        ("urn:dev:ow:10e2073a", "humidity", 40.0, NOW + 1, "%RH"),
    ]
    assert got[0].site == "plant-1"


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b'{"value": 1}', SCHEMA, "senml: a pack is a JSON array of records, got dict"),
        (b"21.5", SCHEMA, "senml: a pack is a JSON array of records, got float"),
        (b"[1", NOT_JSON, "senml: payload is not JSON"),
        (b"\xff[]", NOT_JSON, "senml: payload is not JSON"),
        (b"[]", SCHEMA, "empty SenML pack"),
        (b"[" + b" " * 2000 + b"]", TOO_LARGE, "2002 bytes > 1024"),
    ],
)
def test_senml_format_refuses_what_is_not_a_pack(payload: bytes, reason: str, detail: str) -> None:
    parser = PayloadParser(TEMPLATE, 1024, payload_format="senml")
    with pytest.raises(PayloadError) as info:
        parser.parse(TOPIC_NAME, payload, NOW)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_senml_format_takes_labels_from_the_topic_template() -> None:
    parser = PayloadParser(TEMPLATE, 1024, payload_format="senml")
    (reading,) = parser.parse(TOPIC_NAME, b'[{"v": 3}]', NOW)
    assert (reading.site, reading.device, reading.kind) == ("plant-1", "t-7", "temperature")
    with pytest.raises(PayloadError) as info:
        parser.parse("elsewhere/x", b'[{"v": 3}]', NOW)
    assert info.value.reason == TOPIC
