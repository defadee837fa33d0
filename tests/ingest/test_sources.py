"""Sources: `[[mqtt.sources]]` in the config, routing by topic filter on one MQTT
connection (a real Mosquitto of the test's own), learned subscriptions, per-source
counters, late readings."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from sensord.errors import ConfigError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.client import MqttBridge
from sensord.ingest.formats._device import DeviceFormat
from sensord.ingest.settings import MqttSettings
from sensord.ingest.sources import Router, Source, specificity
from sensord.ops.config import load_settings
from sensord.ops.metrics import Metrics
from tests.support import MqttPublisher, PrivateMosquitto, uid, wait_for


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensord.toml"
    path.write_text(text)
    return path


# ---- config


def test_an_unknown_format_is_reported_at_its_line_with_the_known_ones(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n\n[[mqtt.sources]]\nname = "z"\n'
        'format = "zigbee3000"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (problem,) = info.value.problems
    assert problem.line == 6
    assert "mqtt.sources[0].format" in problem.message
    assert "unknown payload format 'zigbee3000'; known formats:" in problem.message
    assert "senml" in problem.message


def test_two_sources_of_one_name_and_bad_filters_are_errors(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[[mqtt.sources]]\nformat = "senml"\ntopics = ["a/#"]\n\n'
        '[[mqtt.sources]]\nformat = "senml"\ntopics = ["b/#"]\n',
    )
    with pytest.raises(ConfigError, match="two sources are named 'senml'"):
        load_settings(path)
    path = write_config(tmp_path, '[[mqtt.sources]]\nformat = "senml"\ntopics = ["a/#/b"]\n')
    with pytest.raises(ConfigError, match=r"mqtt.sources\[0\].topics.*'#' only the last"):
        load_settings(path)
    path = write_config(tmp_path, "[mqtt]\ntopics = []\n")
    with pytest.raises(ConfigError, match="nothing to read"):
        load_settings(path)


def test_a_format_option_it_does_not_know_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[[mqtt.sources]]\nname = "packs"\nformat = "senml"\ntopics = ["p/#"]\ncolour = "blue"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = info.value.problems[0].message
    assert "mqtt.sources[0]" in message
    assert "colour" in message


def test_format_options_reach_the_format() -> None:
    s = MqttSettings.model_validate(
        {"sources": [{"format": "senml", "topics": ["p/#"], "site": "home", "name": "packs"}]}
    )
    (src,) = s.sources
    assert (src.source_name, src.site, src.topics, src.options) == ("packs", "home", ["p/#"], {})


# ---- routing


def test_the_most_specific_filter_wins() -> None:
    assert specificity("z/bridge/devices") > specificity("z/+/availability")
    assert specificity("z/+/availability") > specificity("z/+")
    assert specificity("z/+") > specificity("z/#")
    assert specificity("z/a/#") > specificity("z/#")

    class Fmt:
        def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
            return []

    wide = Source("wide", "x", Fmt(), ["z/#"], 1)
    avail = Source("avail", "x", Fmt(), ["z/+/availability"], 1)
    exact = Source("exact", "x", Fmt(), ["z/bridge/devices"], 1)
    router = Router([wide, avail, exact])
    assert router.route("z/kitchen") is wide
    assert router.route("z/kitchen/availability") is avail
    assert router.route("z/bridge/devices") is exact
    assert router.route("elsewhere") is None
    assert router.single is None
    assert Router([wide]).single is wide
    assert sorted(router.subscriptions()) == [
        ("z/#", 1),
        ("z/+/availability", 1),
        ("z/bridge/devices", 1),
    ]


class Learner(DeviceFormat):
    """A format of the test's own: `learn/<topic>` names a topic to subscribe to; a number
    on a learned topic is a reading of device = the topic's last level."""

    name = "learner"
    default_topics = ("learn/#",)

    def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
        if topic.startswith("learn/"):
            assert self.link is not None
            learned = topic.removeprefix("learn/")
            if payload:
                self.link.subscribe(learned)
            else:
                self.link.unsubscribe(learned)
            return []
        value = self.value(payload.decode())
        if value is None:
            return []
        device = topic.rsplit("/", 1)[-1]
        reading = self.reading(device, "temperature", value, now)
        return [] if reading is None else [reading]


class Collect:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.late: list[Reading] = []
        self.refused: list[tuple[bytes, str, str]] = []

    def sink(self, reading: Reading, now: float, key: object) -> None:
        self.readings.append(reading)

    def on_late(self, reading: Reading, now: float) -> None:
        self.late.append(reading)

    def on_refused(self, topic: bytes, payload: bytes, reason: str, detail: str) -> None:
        self.refused.append((topic, reason, detail))


async def test_two_formats_one_connection_learned_topics_and_counters(
    broker: PrivateMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every format module imported first: one imported under the copy would register
    # in it alone, and be unknown once the copy is undone (modules import once)
    formats.names()
    monkeypatch.setattr(formats, "_FORMATS", dict(formats._FORMATS))
    formats.register("learner")(Learner)
    root = f"src-{uid()}"
    settings = MqttSettings.model_validate(
        {
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "client_id": f"test-sources-{uid()}",
            "topics": [f"{root}/native/#"],
            "topic_template": f"{root}/native/{{site}}/{{device}}/{{kind}}",
            "sources": [
                {
                    "name": "packs",
                    "format": "senml",
                    "topics": [f"{root}/senml/#"],
                    "topic_template": f"{root}/senml/{{site}}/{{device}}/{{kind}}",
                },
                {"name": "home", "format": "learner", "site": "home"},
            ],
        }
    )
    metrics = Metrics()
    got = Collect()
    bridge = MqttBridge(settings, got.sink, metrics, on_refused=got.on_refused, on_late=got.on_late)
    metrics.sources = bridge.sources
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    pub = MqttPublisher(broker.port)
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        pub.publish(f"{root}/native/p1/t-1/temperature", '{"value": 21.5}')
        pub.publish(f"{root}/senml/p2/d/x", '[{"n": "humidity", "v": 40}]')
        pub.publish(f"{root}/senml/p2/d/x", '{"value": 1}')  # not a pack: refused
        pub.publish(f"learn/{root}/room/kitchen", "1")
        await wait_for(lambda: len(got.readings) == 2 and len(got.refused) == 1)
        # the learned topic is subscribed to and routed to its source
        learned = bridge.sources[2].dynamic
        await wait_for(lambda: bool(learned) and not bridge._subscribing)  # SUBACK is in
        pub.publish(f"{root}/room/kitchen", "19.5")
        pub.publish(f"{root}/room/kitchen", "sunny")  # a text field: skipped, counted
        await wait_for(lambda: len(got.readings) == 3)
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 10)
    native, packs, home = bridge.sources
    assert [(r.site, r.device, r.kind, r.value) for r in got.readings] == [
        ("p1", "t-1", "temperature", 21.5),
        ("p2", "d", "humidity", 40.0),
        ("home", "kitchen", "temperature", 19.5),
    ]
    assert (native.readings, packs.readings, home.readings) == (1, 1, 1)
    assert (native.refused, packs.refused, home.refused) == (0, 1, 0)
    assert home.skipped == {"text": 1}
    assert home.dynamic == {f"{root}/room/kitchen"}
    (_topic, reason, detail) = got.refused[0]
    assert reason == "schema"
    assert detail.startswith("source packs: senml: ")  # the source is named
    assert home.summary()["devices"] == [{"site": "home", "device": "kitchen"}]
    text = _exposition(metrics)
    assert 'sensord_readings_total{source="home"} 1.0' in text
    assert 'sensord_readings_total{source="sensord"} 1.0' in text
    assert 'sensord_fields_skipped_total{reason="text",source="home"} 1.0' in text


async def test_late_readings_go_to_history_not_rules_and_duplicates_are_dropped(
    broker: PrivateMosquitto,
) -> None:
    root = f"late-{uid()}"
    settings = MqttSettings.model_validate(
        {
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "client_id": f"test-late-{uid()}",
            "topics": [f"{root}/#"],
            "topic_template": f"{root}/{{site}}/{{device}}/{{kind}}",
        }
    )
    metrics = Metrics()
    got = Collect()
    bridge = MqttBridge(settings, got.sink, metrics, on_late=got.on_late)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    pub = MqttPublisher(broker.port)
    ts = round(time.time()) - 60
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        topic = f"{root}/p/t-1/temperature"
        for value, t in ((20, ts), (20, ts), (21, ts + 10), (19, ts + 5), (22, ts + 10)):
            pub.publish(topic, json.dumps({"value": value, "ts": t}))
        await wait_for(lambda: metrics.messages == 5)
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 10)
    assert [r.value for r in got.readings] == [20.0, 21.0]
    # an older reading, and another value at the newest's time: late, kept for history
    assert [r.value for r in got.late] == [19.0, 22.0]
    assert (metrics.duplicates, metrics.late, metrics.readings) == (1, 2, 2)
    assert "sensord_readings_late_total 2.0" in _exposition(metrics)


def _exposition(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_what_no_filter_matches_goes_to_a_source_that_learns_topics() -> None:
    class Plain:
        def parse(self, topic: str, payload: bytes | bytearray, now: float) -> list[Reading]:
            return []

    class Learning(Plain):
        learns_topics = True

    plain = Source("plain", "x", Plain(), ["a/#"], 1)
    learning = Source("ha", "y", Learning(), ["ha/+/+/config"], 1)
    router = Router([plain, learning])
    assert router.route("a/b") is plain
    assert router.route("zigbee2mqtt/kitchen") is learning  # subscribed in an earlier run
    assert Router([plain]).route("zigbee2mqtt/kitchen") is None
    assert Router([learning]).single is None  # a learning source is always routed
