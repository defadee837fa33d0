"""sensord-sim: the pure fleet model and scheduler, then the CLI against the real Mosquitto.

Scenarios, faults and formats: test_simulator_scenarios.py and test_simulator_faults.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.broker import BrokerUrl, BrokerUrlError, parse_broker_url
from simulators.cli import main
from simulators.fleet import DEFAULT_EPOCH_MS, Fleet, Reading
from simulators.runner import StopFlag, run
from simulators.scenario import load_scenario
from simulators.wire import WirePublisher
from tests.support import run_sim, start_sim

HEATWAVE = load_scenario("heatwave")

BROKER_HOST, BROKER_PORT = "127.0.0.1", 1883


def _series(fleet: Fleet, until: float) -> dict[str, list[Reading]]:
    by_topic: dict[str, list[Reading]] = defaultdict(list)
    for message in fleet.take(until):
        by_topic[message.topic].append(message.reading)
    return by_topic


# --- pure: fleet model -------------------------------------------------------------------


def test_same_seed_gives_same_values_and_other_seed_differs() -> None:
    def values(seed: int) -> list[float]:
        return [m.reading.value for m in Fleet(sites=2, sensors=3, rate=5, seed=seed).take(20.0)]

    assert values(7) == values(7)
    assert values(7) != values(8)


def test_values_do_not_depend_on_how_the_schedule_is_consumed() -> None:
    whole = [m.payload for m in Fleet(sensors=4, rate=10, scenario=HEATWAVE).take(40.0)]
    chunked_fleet = Fleet(sensors=4, rate=10, scenario=HEATWAVE)
    chunked: list[bytes] = []
    while len(chunked) < len(whole):
        chunked += [m.payload for m in chunked_fleet.take(40.0, limit=7)]
    assert chunked == whole


def test_sensors_are_near_their_setpoint_with_own_bias() -> None:
    series = _series(Fleet(sites=2, sensors=5, rate=2, seed=3), 60.0)
    assert len(series) == 10
    means = [sum(r.value for r in rs) / len(rs) for rs in series.values()]
    assert all(20.0 < m < 24.5 for m in means), means
    assert len({round(m, 3) for m in means}) == len(means), "each sensor has its own offset"


@pytest.mark.parametrize(
    ("rate", "sensors", "until", "expected"),
    [(1.0, 1, 10.0, 11), (2.0, 5, 1.0, 11), (1000.0, 3, 2.5, 7501), (0.5, 2, 1.999, 2)],
)
def test_schedule_is_computed_from_the_index(
    rate: float, sensors: int, until: float, expected: int
) -> None:
    fleet = Fleet(sensors=sensors, rate=rate)
    readings = [m.reading for m in fleet.take(until)]
    assert len(readings) == expected
    total = rate * sensors
    assert [r.t for r in readings] == [j / total for j in range(expected)]
    # Each sensor takes its turn: sensor k reads at k/total, then every 1/rate.
    assert [r.device for r in readings[:sensors]] == [f"t-{d}" for d in range(1, sensors + 1)]


def test_payload_follows_the_readings_contract() -> None:
    first, second = Fleet(sites=1, sensors=1, topic_root="root").take(1.0)
    assert first.topic == "root/plant-1/t-1/temperature"
    body = json.loads(first.payload)
    assert body == {"value": first.reading.value, "ts": DEFAULT_EPOCH_MS, "unit": "C"}
    assert isinstance(body["value"], float)
    assert round(body["value"], 2) == body["value"]
    assert json.loads(second.payload)["ts"] == DEFAULT_EPOCH_MS + 1000, "ts = start + due time"


def _longest_run_above(readings: list[Reading], threshold: float) -> tuple[float, float]:
    """(start, end) of the longest stretch of consecutive readings above ``threshold``."""
    best, start = (0.0, 0.0), None
    for r in readings:
        if r.value > threshold:
            start = r.t if start is None else start
            if r.t - start > best[1] - best[0]:
                best = (start, r.t)
        else:
            start = None
    return best


def test_heatwave_drives_plant1_hot_then_back_each_cycle() -> None:
    series = _series(Fleet(sites=2, sensors=5, rate=2, seed=1, scenario=HEATWAVE), 125)
    for device in ("t-1", "t-2"):
        readings = series[f"sensors/plant-1/{device}/temperature"]
        for cycle_start in (0.0, 60.0):
            cycle = [r for r in readings if cycle_start <= r.t < cycle_start + 60]
            first_hot = next(r.t for r in cycle if r.value > 80) - cycle_start
            assert first_hot <= 10.0
            run_start, run_end = _longest_run_above(cycle, 80.0)
            assert run_start - cycle_start == first_hot, "no dip below 80 once hot"
            assert run_end - run_start >= 15.0
            cooled = next(r.t for r in cycle if r.t > run_end and r.value < 75) - cycle_start
            assert cooled < 40.0
            assert all(r.value < 75 for r in cycle if r.t - cycle_start >= cooled)
    hot = {"sensors/plant-1/t-1/temperature", "sensors/plant-1/t-2/temperature"}
    others = [r.value for topic, rs in series.items() if topic not in hot for r in rs]
    assert len(others) == 8 * 250
    assert max(others) < 40


def test_heatwave_with_one_sensor_heats_only_t1() -> None:
    fleet = Fleet(sites=1, sensors=1, rate=1, scenario=HEATWAVE)
    assert [s.device for s in fleet.sensors if fleet.condition(s, 10.0).setpoint] == ["t-1"]
    assert max(m.reading.value for m in fleet.take(20)) > 85


# --- pure: pacing ------------------------------------------------------------------------


class _FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        # Like a real clock, time always moves on, even when seconds is below one ulp of now.
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))


class _ListSink:
    """Records publishes with the fake time at which they happened; confirms instantly."""

    qos = 0
    connected = True

    def __init__(self, when: _FakeTime) -> None:
        self.when = when
        self.sent = 0
        self.errors = 0
        self.log: list[tuple[float, str, bytes]] = []

    @property
    def in_flight(self) -> int:
        return 0

    def publish(self, topic: str, payload: bytes) -> None:
        self.log.append((self.when.now, topic, payload))
        self.sent += 1

    def settle(self) -> None:
        pass

    def room(self) -> int:
        return 10_000

    def wait(self, timeout: float) -> None:
        raise AssertionError("never full")

    def abandon(self) -> None:
        pass


def test_runner_publishes_each_reading_at_its_due_time_until_the_duration() -> None:
    fake = _FakeTime()
    sink = _ListSink(fake)
    fleet = Fleet(sites=1, sensors=4, rate=25.0)  # 100 msg/s in total
    summary = run(fleet, sink, stop=StopFlag(), duration_s=3.0, clock=fake.clock, sleep=fake.sleep)
    assert summary.sent == len(sink.log) == 300
    lateness = [at - 1000.0 - j / 100 for j, (at, _, _) in enumerate(sink.log)]
    assert min(lateness) >= 0, "never before the due time"
    assert max(lateness) < 1e-6, "and on time: no accumulated drift"


def test_runner_stops_at_count_and_on_request() -> None:
    fake = _FakeTime()
    sink = _ListSink(fake)
    assert run(Fleet(), sink, stop=StopFlag(), count=12, clock=fake.clock, sleep=fake.sleep).sent
    assert len(sink.log) == 12
    stop = StopFlag()
    stop.request()
    assert run(Fleet(), _ListSink(fake), stop=stop, clock=fake.clock, sleep=fake.sleep).sent == 0


# --- pure: command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerUrl("127.0.0.1", 1883)),
        ("mqtt://broker", BrokerUrl("broker", 1883)),
        ("mqtt://u%40x:p%3Aw@h:1884", BrokerUrl("h", 1884, "u@x", "p:w")),
        ("mqtt://user@h:1", BrokerUrl("h", 1, "user", None)),
        ("mqtts://h", BrokerUrl("h", 8883, tls=True)),
    ],
)
def test_broker_url_parses(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


def test_broker_url_never_shows_the_password() -> None:
    shown = str(parse_broker_url("mqtt://user:s3cret@h:1884"))
    assert shown == "mqtt://user:***@h:1884"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "scheme"),
        ("mqtt://h:99999", "invalid MQTT URL"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h/x", "path"),
    ],
)
def test_broker_url_rejects(url: str, message: str) -> None:
    with pytest.raises(BrokerUrlError, match=message):
        parse_broker_url(url)


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--mqtt", "http://h:8883"],
        ["--rate", "0"],
        ["--topic-root", "a/+/b"],
        ["--rate", "1", "--total-rate", "5"],
        ["--sensors", "1", "--processes", "2"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "scheme must be mqtt:// or mqtts://" in err
    assert "not allowed with argument --rate" in err
    assert "more than the 1 sensors" in err


# --- real broker ------------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.arrivals: list[float] = []
        self._cond = threading.Condition()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.arrivals.append(time.monotonic())
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return len(self.messages)


@contextlib.contextmanager
def _subscribed(topic_root: str, qos: int) -> Iterator[_Collector]:
    collector = _Collector()
    subscribed = threading.Event()

    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        subscribed.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"simtest-sub-{uuid.uuid4()}", clean_session=True
    )
    client.on_message = collector.on_message
    client.on_subscribe = on_subscribe
    client.connect(BROKER_HOST, BROKER_PORT)
    client.loop_start()
    try:
        client.subscribe(f"{topic_root}/#", qos=qos)
        assert subscribed.wait(5), "no SUBACK from Mosquitto"
        yield collector
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def topic_root() -> str:
    return f"simtest-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("qos", "count", "extra"),
    [(1, 2000, ["--max-inflight", "50"]), (0, 2000, []), (2, 500, ["--max-inflight", "20"])],
    ids=["qos1-bounded", "qos0", "qos2"],
)
def test_every_message_arrives_with_a_valid_payload(
    topic_root: str, qos: int, count: int, extra: list[str]
) -> None:
    sites, sensors, seed = 2, 5, 42
    with _subscribed(topic_root, qos) as collector:
        before_ms = time.time_ns() // 1_000_000
        done = run_sim(
            *("--topic-root", topic_root, "--sites", str(sites), "--sensors", str(sensors)),
            *("--rate", "150", "--count", str(count), "--seed", str(seed)),
            *("--qos", str(qos), "--client-id", f"simtest-pub-{uuid.uuid4()}", "--json"),
            *extra,
            timeout=60,
        )
        after_ms = time.time_ns() // 1_000_000
        assert done.returncode == 0, done.stderr
        received = collector.wait_for(count, timeout=10)
        time.sleep(0.2)  # anything beyond the count would show up now
        assert received == len(collector.messages) == count

    summary = json.loads(done.stdout)
    assert summary["sent"] == count
    assert summary["errors"] == 0
    assert summary["qos"] == qos
    assert summary["elapsed_s"] > 0
    assert math.isclose(summary["rate"], count / summary["elapsed_s"], rel_tol=0.01)

    by_topic: dict[str, list[float]] = defaultdict(list)
    for topic, payload in collector.messages:
        body = json.loads(payload)
        assert set(body) == {"value", "ts", "unit"}
        assert body["unit"] == "C"
        assert isinstance(body["ts"], int)
        assert before_ms - 1000 <= body["ts"] <= after_ms + 1000
        by_topic[topic].append(body["value"])
    assert set(by_topic) == {
        f"{topic_root}/plant-{s}/t-{d}/temperature"
        for s in range(1, sites + 1)
        for d in range(1, sensors + 1)
    }
    # Per topic, in order, the very series the pure model gives for this seed.
    expected = _series(
        Fleet(sites=sites, sensors=sensors, rate=150, seed=seed, topic_root=topic_root),
        until=(count - 1) / (150 * sites * sensors),
    )
    assert by_topic == {topic: [r.value for r in rs] for topic, rs in expected.items()}


class _PeakRecordingPublisher(WirePublisher):
    peak = 0

    def publish(self, topic: str, payload: bytes) -> None:
        super().publish(topic, payload)
        self.peak = max(self.peak, self.in_flight)


def test_publisher_bounds_unacknowledged_qos1_publishes(topic_root: str) -> None:
    count, bound = 3000, 50
    # Due far faster than the broker can acknowledge, so only the bound holds it back.
    fleet = Fleet(sensors=10, rate=1e5, topic_root=topic_root)
    url = parse_broker_url(f"mqtt://{BROKER_HOST}:{BROKER_PORT}")
    publisher = _PeakRecordingPublisher(
        url, client_id=f"simtest-pub-{uuid.uuid4()}", qos=1, max_inflight=bound
    )
    # No subscriber: at this speed the stock broker's 1000-message queue per subscriber would
    # drop messages (FACTS.md); sent counts PUBACKs, which is what the bound is about.
    with publisher:
        publisher.connect(timeout=5)
        summary = run(fleet, publisher, stop=StopFlag(), count=count)
    assert (summary.sent, summary.errors) == (count, 0)
    assert publisher.peak == bound


def test_signal_stops_cleanly_and_summary_matches_deliveries(topic_root: str) -> None:
    with _subscribed(topic_root, 1) as collector:
        with start_sim(
            *("--topic-root", topic_root, "--rate", "200", "--sensors", "5"),
            *("--client-id", f"simtest-pub-{uuid.uuid4()}", "--json", "--quiet"),
            stdout=subprocess.PIPE,
        ) as sim:
            assert collector.wait_for(300, timeout=15) >= 300, "simulator never published"
            sim.stop(signal.SIGINT, timeout=15)
        assert sim.returncode == 0, sim.err
        assert "Traceback" not in sim.err
        assert sim.err == "", "--quiet prints nothing on stderr"
        summary = json.loads(sim.out)
        assert summary["errors"] == 0
        assert summary["sent"] >= 300
        assert collector.wait_for(summary["sent"], timeout=5) == summary["sent"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_broker_exits_1_naming_the_url() -> None:
    url = f"mqtt://127.0.0.1:{_closed_port()}"
    done = run_sim("--mqtt", url, "--count", "5", "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert url in lines[0]
    assert "Traceback" not in done.stderr
