from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import MqttPublisher, SensordProcess, WebhookSink, uid


@pytest.fixture
def mqtt_pub() -> Iterator[MqttPublisher]:
    pub = MqttPublisher()
    yield pub
    pub.close()


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
