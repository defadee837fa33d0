"""Hypothesis fuzz over real MQTT: random bytes and random JSON documents on the topic.

The bridge runs in its own thread and loop against the machine's Mosquitto; every example
publishes a batch and waits until the bridge counted it. Nothing may crash the bridge, and
every message is accounted for: received = accepted + refused (by reason), each refusal
handed to the quarantine hook.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensord.events import Reading
from sensord.ingest.client import MqttBridge
from sensord.ingest.payload import REASONS
from sensord.ingest.settings import MqttSettings
from sensord.ops.metrics import Metrics
from tests.support import MqttPublisher, uid


@dataclass
class BridgeThread:
    root: str
    metrics: Metrics = field(default_factory=Metrics)
    readings: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-bridge", daemon=True)

    def _sink(self, reading: Reading, now: float, key: object) -> None:
        assert isinstance(reading.value, float)
        self.readings += 1

    def _refused(self, topic: bytes, payload: bytes, reason: str, detail: str) -> None:
        self.refused.append(reason)

    def _run(self) -> None:
        async def main() -> None:
            settings = MqttSettings(
                client_id=f"test-fuzz-{uid()}",
                topics=[f"{self.root}/#"],
                topic_template=f"{self.root}/{{site}}/{{device}}/{{kind}}",
                persistent_session=False,
            )
            bridge = MqttBridge(settings, self._sink, self.metrics, on_refused=self._refused)
            task = asyncio.create_task(bridge.run(self._stop))
            await bridge.connected.wait()
            self._ready.set()
            await task

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(15), "bridge did not connect"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def fuzz_bridge() -> Iterator[BridgeThread]:
    bridge = BridgeThread(root=f"fuzz-{uid()}")
    bridge.start()
    yield bridge
    bridge.stop()
    assert not bridge.errors


@pytest.fixture(scope="module")
def fuzz_pub() -> Iterator[MqttPublisher]:
    pub = MqttPublisher()
    yield pub
    pub.close()


json_docs = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["value", "ts", "unit", "n", "v", "vb", "t", "bn", "bt", "bu", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=8,
)
payloads = st.one_of(
    st.binary(max_size=64),
    json_docs.map(lambda d: json.dumps(d).encode()),
    st.floats().map(lambda f: repr(f).encode()),
)


@settings(
    max_examples=100,
    database=None,  # no .hypothesis directory in the worktree
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(payloads, min_size=1, max_size=40))
def test_every_message_is_accounted_for(
    fuzz_bridge: BridgeThread, fuzz_pub: MqttPublisher, batch: list[bytes]
) -> None:
    m = fuzz_bridge.metrics
    before_messages, before_refused = m.messages, len(fuzz_bridge.refused)
    before_invalid = sum(m.invalid.values())
    before_ok = fuzz_bridge.readings + m.duplicates
    for i, payload in enumerate(batch):
        fuzz_pub.publish(f"{fuzz_bridge.root}/s/d-{i % 3}/temperature", payload)
    deadline = time.monotonic() + 15
    while m.messages < before_messages + len(batch) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fuzz_bridge.errors
    assert m.messages - before_messages == len(batch)  # nothing lost, nothing extra
    refused = sum(m.invalid.values()) - before_invalid
    accepted = len(batch) - refused
    assert set(m.invalid) <= set(REASONS)
    assert len(fuzz_bridge.refused) - before_refused == refused  # each one quarantined
    # an accepted message gives at least one reading (or a skipped duplicate)
    assert fuzz_bridge.readings + m.duplicates - before_ok >= accepted
