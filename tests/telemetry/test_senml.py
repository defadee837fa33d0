"""The stream's SenML pack (RFC 8428): what each record holds, and that SenML readers read it."""

from __future__ import annotations

import json

from sensord.events import Reading
from sensord.ingest.payload import PayloadParser
from sensord.telemetry.senml import PackEncoder, StreamReading, decode


def test_each_record_is_complete_bn_n_v_t_and_u_when_there_is_one() -> None:
    readings = [
        Reading.trusted("plant-1", "t-7", "temperature", 21.5, 1_800_000_000.25, {}, "Cel"),
        Reading.trusted("plant-1", "t-7", "humidity", 40.0, 1_800_000_001.0, {}, None),
        Reading.trusted("plant-2", "m-1", "power", 3, 1_800_000_002.0, {}, "W"),
    ]
    pack = json.loads(PackEncoder().encode(readings))
    assert pack == [
        {"bn": "plant-1/t-7/", "n": "temperature", "v": 21.5, "u": "Cel", "t": 1_800_000_000.25},
        {"bn": "plant-1/t-7/", "n": "humidity", "v": 40.0, "t": 1_800_000_001.0},
        {"bn": "plant-2/m-1/", "n": "power", "v": 3.0, "u": "W", "t": 1_800_000_002.0},
    ]
    # no field a receiver must understand (RFC 8428 §4.4: names ending with "_")
    assert not any(key.endswith("_") for rec in pack for key in rec)


def test_labels_are_an_extension_field_and_names_are_escaped() -> None:
    r = Reading.trusted('pl"ant', "t\\1", "témp", 1.0, 1_800_000_000.0, {"room": "a/b"}, "°C")
    (rec,) = json.loads(PackEncoder().encode([r]))
    assert rec["labels"] == {"room": "a/b"}
    assert rec["bn"] == 'pl"ant/t\\1/'
    assert rec["n"] == "témp"
    assert decode(PackEncoder().encode([r])) == [
        StreamReading('pl"ant', "t\\1", "témp", 1.0, 1_800_000_000.0, "°C", {"room": "a/b"})
    ]


def test_decode_resolves_base_fields_of_any_pack() -> None:
    body = b'[{"bn": "s/d/", "bt": 1800000000, "bu": "Cel", "n": "temp", "v": 1},'
    body += b' {"n": "hum", "u": "%RH", "v": 2, "t": 1}, {"n": "text", "vs": "x"}, {"v": 3}]'
    assert decode(body) == [
        StreamReading("s", "d", "temp", 1.0, 1_800_000_000.0, "Cel"),
        StreamReading("s", "d", "hum", 2.0, 1_800_000_001.0, "%RH"),
    ]


def test_sensords_own_senml_format_reads_the_pack_labels_field_ignored() -> None:
    readings = [
        Reading.trusted("plant-1", "t-7", "temperature", 21.5, 1_800_000_000.0, {"x": "y"}, "Cel")
    ]
    parser = PayloadParser("in/{site}/{device}/{kind}", 4096, payload_format="senml")
    (got,) = parser.parse(
        "in/plant-1/t-7/temperature", PackEncoder().encode(readings), 1_800_000_000.0
    )
    assert (got.value, got.ts, got.unit, got.kind) == (21.5, 1_800_000_000.0, "Cel", "temperature")
