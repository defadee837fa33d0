"""Connections per process (sensord/amqp/shared.py): at most one that publishes and one
that consumes, every role on channels of its own. Counted by RabbitMQ itself: each
connection's `connection_name` client property names the prefix, the purpose and the pid.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from faststream.rabbit import RabbitQueue
from pydantic import SecretStr

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.amqp.topology import make_broker
from sensord.telemetry.partition import stream_names
from tests.support import (
    AMQP_URL,
    HOT_RULE,
    MqttPublisher,
    SensordProcess,
    delete_amqp,
    queue_depth,
    running,
    uid,
    wait_for,
)

RABBITMQCTL = shutil.which("rabbitmqctl")

RULES = HOT_RULE

# per role, the connections a `sensord run` keeps (edge and all with the readings stream on)
EXPECTED = {
    "edge": ["publish"],
    "notify": ["consume"],
    "all": ["consume", "publish"],
    "rules": ["consume", "publish"],
}


def connection_names(prefix: str) -> list[str]:
    """The connection_name of every connection RabbitMQ has from a sensord of `prefix`."""
    assert RABBITMQCTL is not None
    out = subprocess.run(
        [RABBITMQCTL, "list_connections", "client_properties", "--formatter", "json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    names = []
    for row in json.loads(out or "[]"):
        for key, _type, value in row["client_properties"]:
            if key == "connection_name" and value.startswith(f"sensord {prefix} "):
                names.append(value)
    return sorted(names)


async def test_the_broker_takes_a_channel_and_never_closes_the_connection() -> None:
    """amqp/broker.py: FastStream's broker on the shared connection (its `_connect`,
    `stop` and `declare_queue` overridden), stopped and started again as AmqpLink does."""
    amqp = AmqpSettings(url=SecretStr(AMQP_URL), prefix=f"tb{uid()}")
    link = SharedConnection(amqp, "publish")
    broker = make_broker(amqp, None, link)
    queue = f"{amqp.prefix}.quarantine"
    try:
        for _ in range(2):
            await broker.start()
            conn = await link.connect()
            assert broker._connection is conn
            await broker.declare_queue(RabbitQueue(queue, durable=True))
            channel = broker._channel
            assert channel is not None
            # not restored by aio-pika after a reconnect: a 404 there fails the connection
            assert queue not in channel._queues  # aio-pika's restore set
            await broker.publish(b"refused", queue=queue, timeout=5)
            await broker.stop()
            assert channel.is_closed
            assert not conn.is_closed
            assert conn.connected.is_set()
        probe = await link.channel()  # the connection still works for the other roles
        await probe.close()
    finally:
        await link.close()
        await delete_amqp(amqp.prefix, [queue])


@pytest.mark.skipif(RABBITMQCTL is None, reason="needs rabbitmqctl (the rabbitmq-server package)")
@pytest.mark.parametrize("role", list(EXPECTED))
async def test_one_publishing_and_one_consuming_connection_per_process(
    tmp_path: Path, role: str
) -> None:
    prefix = f"tc{uid()}"
    sensord = SensordProcess(tmp_path, prefix, f"tc/{uid()}", role=role)
    if role == "rules":
        sensord.extra_toml = '[telemetry]\npartitions = 2\n\n[central]\nlock_retry = "0.3s"\n'
    else:  # every publishing role's channel: the drain's, the broker's, the stream's
        sensord.channels = [{"name": "a", "type": "console"}, {"name": "b", "type": "console"}]
        sensord.extra_toml = "[telemetry]\nstream = true\n"
    try:
        async with running(sensord) as s:
            assert s.proc is not None
            pid = s.proc.pid
            deadline = time.monotonic() + 20
            names = connection_names(prefix)
            while len(names) < len(EXPECTED[role]) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                names = connection_names(prefix)
            await asyncio.sleep(1.5)  # every role settled: no further connection comes
            names = connection_names(prefix)
            assert [n.split()[2] for n in names] == EXPECTED[role], names
            assert all(n.endswith(f":{pid}") for n in names), names
            _, body = await s.get("/readyz")
            nodes = json.loads(body)["amqp_nodes"]
            assert sorted(nodes) == EXPECTED[role]
            assert set(nodes.values()) == {"127.0.0.1:5672"}
            await s.stop()
        assert connection_names(prefix) == []  # closed on stop
    finally:
        streams = stream_names(prefix, 2) + stream_names(prefix, 1)
        central = [f"{prefix}.rules.checkpoint.{i}" for i in range(2)] + [f"{prefix}.rules.members"]
        await delete_amqp(prefix, streams + central)


@pytest.mark.e2e
@pytest.mark.skipif(RABBITMQCTL is None, reason="needs rabbitmqctl (the rabbitmq-server package)")
async def test_after_a_cut_every_channel_of_the_publishing_connection_is_back(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    """An edge's one connection cut and back: the drain's, the quarantine's and the
    readings stream's channels all publish again, on one connection still."""
    proxy = sensord.amqp_through_proxy()
    await proxy.up()
    sensord.role = "edge"
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "a", "type": "console"}]
    sensord.extra_toml = "[telemetry]\nstream = true\n"
    prefix = sensord.prefix
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    try:
        async with running(sensord):
            # every channel up before the cut
            await wait_for(lambda: "connected to RabbitMQ" in sensord.stderr())
            await wait_for(lambda: "publishing readings to the RabbitMQ" in sensord.stderr())
            await proxy.down()
            await asyncio.sleep(1.5)
            await proxy.up()
            mqtt_pub.publish(topic, "90")  # an alert (the drain)
            mqtt_pub.publish(topic, "not a reading")  # refused (the quarantine's broker)
            mqtt_pub.publish(topic, "21")  # readings (the stream)
            await wait_for_depth(f"{prefix}.notify.a", 2)  # firing, then resolved
            await wait_for_depth(f"{prefix}.quarantine", 1)
            await wait_for_depth(f"{prefix}.readings", 1)
            assert [n.split()[2] for n in connection_names(prefix)] == ["publish"]
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
        await delete_amqp(prefix, [f"{prefix}.readings"])


async def wait_for_depth(queue: str, depth: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await queue_depth(queue)) < depth:
        assert time.monotonic() < deadline, f"{queue}: {got} message(s), not {depth}"
        await asyncio.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.skipif(RABBITMQCTL is None, reason="needs rabbitmqctl (the rabbitmq-server package)")
async def test_after_a_cut_the_central_reader_takes_its_partitions_again(
    sensord: SensordProcess,
) -> None:
    """`--role rules`: the reader's channels are not restored by aio-pika (its locks went
    with the lost connection); it takes the partitions again once the connection is back."""
    proxy = sensord.amqp_through_proxy()
    await proxy.up()
    sensord.role = "rules"
    sensord.extra_toml = '[telemetry]\npartitions = 2\n\n[central]\nlock_retry = "0.3s"\n'
    prefix = sensord.prefix

    async def owned() -> tuple[float, float]:
        m = await sensord.metrics()
        return m["sensord_central_partitions_owned"], m["sensord_central_takeovers_total"]

    async def wait_owned(n: float, takeovers: float) -> None:
        deadline = time.monotonic() + 30
        while not ((got := await owned())[0] == n and got[1] >= takeovers):
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.2)

    try:
        async with running(sensord):
            await wait_owned(2, 2)
            await proxy.down()
            await wait_owned(0, 2)
            await proxy.up()
            await wait_owned(2, 4)
            names = connection_names(prefix)
            assert [n.split()[2] for n in names] == ["consume", "publish"], names
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
        central = [f"{prefix}.rules.checkpoint.{i}" for i in range(2)] + [f"{prefix}.rules.members"]
        await delete_amqp(prefix, stream_names(prefix, 2) + central)
