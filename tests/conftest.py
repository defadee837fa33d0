from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import MqttPublisher, PrivateMosquitto, SensordProcess, WebhookSink, uid


@pytest.fixture
def mqtt_pub() -> Iterator[MqttPublisher]:
    pub = MqttPublisher()
    yield pub
    pub.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A private Mosquitto of this test's own, on a free port, stopped after the test."""
    b = PrivateMosquitto(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
def sensord(tmp_path: Path) -> SensordProcess:
    """A sensord subprocess with a unique AMQP prefix, MQTT topic root and client id."""
    tag = uid()
    return SensordProcess(workdir=tmp_path, prefix=f"t{tag}", topic_root=f"test-{tag}")
