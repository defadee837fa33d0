"""[amqp] url as a list of nodes: settings, the node ring, and failover on real connections.

Failover is proven here against the shared RabbitMQ behind two TCP proxies (two "nodes"
that are one broker); tests/cluster/ proves it on a real 3-node cluster.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import aio_pika
import pytest
from pydantic import ValidationError

from sensord.amqp.failover import FailoverConnection, NodeRing, connect_robust
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import channel_queues, declare_topology
from sensord.notify.registry import ChannelSettings
from sensord.ops.config import load_settings
from sensord.ops.metrics import Metrics
from tests.support import AMQP_URL, TcpProxy, free_port, uid, wait_for

URLS = [f"amqp://u:secret@10.0.0.{i}:5672/" for i in (1, 2, 3)]


def test_one_url_stays_a_string() -> None:
    s = AmqpSettings(url=AMQP_URL)  # type: ignore[arg-type]  # pydantic coerces str
    assert not isinstance(s.url, list)
    assert s.url.get_secret_value() == AMQP_URL
    assert s.urls == [AMQP_URL]
    assert s.group_size is None  # no new queue argument for a single node


def test_a_list_and_a_comma_separated_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "sensord.toml"
    cfg.write_text('[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n')
    env = {"SENSORD_AMQP__URL": ",".join(URLS)}
    s = load_settings(cfg, env).amqp
    assert s.urls == URLS
    assert s.nodes == ["10.0.0.1:5672", "10.0.0.2:5672", "10.0.0.3:5672"]
    assert s.group_size == 3
    assert "secret" not in repr(s)
    assert "secret" not in str(s.nodes)
    cfg.write_text(f"[amqp]\nurl = {URLS!r}\nquorum_group_size = 0\n".replace("'", '"'))
    s = load_settings(cfg, {}).amqp
    assert s.urls == URLS
    assert s.group_size is None


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (["http://x/"], "amqp://host:port/"),
        ([URLS[0], "amqps://u:p@h:5671/"], "one scheme"),
        ([], "at least one"),
    ],
)
def test_bad_urls_are_refused_without_echoing_them(url: list[str], error: str) -> None:
    with pytest.raises(ValidationError) as exc:
        AmqpSettings(url=url)  # type: ignore[arg-type]
    messages = " ".join(e["msg"] for e in exc.value.errors())  # what `sensord check` shows
    assert error in messages
    assert "secret" not in messages


def test_username_and_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("p@ss:word\n")
    s = AmqpSettings(url=URLS, username="edge-1", password_file=pw)  # type: ignore[arg-type]
    assert s.connection_urls() == [
        f"amqp://edge-1:p%40ss%3Aword@10.0.0.{i}:5672/" for i in (1, 2, 3)
    ]
    with pytest.raises(ValidationError, match="password_file needs username"):
        AmqpSettings(password_file=pw)
    with pytest.raises(ValidationError, match="amqps://"):
        AmqpSettings(ca_file=pw)


def test_cluster_arguments_only_when_configured() -> None:
    ch = ChannelSettings.model_validate({"name": "ops", "type": "console"})
    plain = {q.name: q for q in channel_queues(AmqpSettings(), ch)}
    assert all(not q.optional for q in plain.values())
    s = AmqpSettings(url=URLS, delivery_limit=5)  # type: ignore[arg-type]
    specs = {q.name: q for q in channel_queues(s, ch)}
    work, dead = specs["sensord.notify.ops"], specs["sensord.notify.ops.dead"]
    assert work.all_arguments["x-quorum-initial-group-size"] == 3
    assert work.all_arguments["x-delivery-limit"] == 5
    assert dead.optional == {"x-quorum-initial-group-size": 3}
    assert specs["sensord.notify.ops.retry.5s"].optional == {"x-quorum-initial-group-size": 3}
    # the arguments of the first release are unchanged
    assert work.arguments == plain["sensord.notify.ops"].arguments


def test_ring_shuffles_walks_every_node_and_backs_off() -> None:
    s = AmqpSettings(url=URLS, reconnect_interval=1.0)  # type: ignore[arg-type]
    starts = {NodeRing(s, "t", rng=random.Random(seed)).next_url() for seed in range(30)}
    assert starts == set(URLS)  # the start is spread over the nodes
    ring = NodeRing(s, "t", rng=random.Random(1))
    first_round = [ring.next_url() for _ in range(3)]
    assert sorted(first_round) == sorted(URLS)
    assert [ring.next_url() for _ in range(3)] == first_round  # then round robin
    ring = NodeRing(s, "t", rng=random.Random(1))
    pauses = []
    for _ in range(9):
        ring.next_url()
        pauses.append(ring.pause_after_failure())
    assert max(pauses[0], pauses[1]) < 0.25  # the next node of a round: at once
    assert 0.5 <= pauses[2] <= 1.0
    assert 1.0 <= pauses[5] <= 2.0
    assert 2.0 <= pauses[8] <= 4.0
    one = NodeRing(AmqpSettings(reconnect_interval=0.5), "t")
    one.next_url()
    assert one.pause_after_failure() == 0.5  # one node: reconnect_interval as before


def test_aio_pika_internals_relied_on() -> None:
    """amqp/failover.py overrides these: an aio-pika upgrade that renames them fails here."""
    rc = aio_pika.RobustConnection
    assert callable(rc._RobustConnection__connect_transport)  # type: ignore[attr-defined]
    assert callable(rc._on_connected)
    assert callable(rc._on_connection_close)
    assert "reconnect_interval" in [p.name for p in rc.PARAMETERS]


async def test_connects_to_the_node_that_answers() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    s = AmqpSettings(url=[dead, AMQP_URL], reconnect_interval=0.2)  # type: ignore[list-item]
    for seed in range(4):  # whichever node the shuffle starts with
        ring = NodeRing(s, "t", rng=random.Random(seed))
        conn = await connect_robust(s, ring, timeout=5)
        try:
            assert ring.connected == "127.0.0.1:5672"
        finally:
            await conn.close()


async def test_moves_to_the_next_node_on_loss_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    a, b = TcpProxy(5672), TcpProxy(5672)
    await a.up()
    await b.up()
    urls = [AMQP_URL.replace(":5672", f":{p.port}") for p in (a, b)]
    s = AmqpSettings(url=urls, reconnect_interval=0.2)  # type: ignore[arg-type]
    ring = NodeRing(s, "test", on_move=lambda _o, _n: metrics.amqp_failovers.labels("test").inc())
    conn = await connect_robust(s, ring, timeout=5, reconnect_interval=0.2)
    queue_name = f"failover-{uid()}"
    try:
        assert isinstance(conn, FailoverConnection)
        first = ring.connected
        assert first is not None
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(queue_name, auto_delete=False, durable=True)
        cut = a if first.endswith(f":{a.port}") else b
        await cut.down()
        await wait_for(lambda: ring.connected not in (None, first), timeout=15)
        assert ring.moves == 1
        assert metrics.amqp_failovers.labels("test")._value.get() == 1
        # the robust channel was restored on the new node: it publishes with confirms
        await asyncio.wait_for(conn.connected.wait(), 10)
        await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue_name)
        assert (await queue.declare()).message_count == 1
        logs = caplog.text
        assert "secret" not in logs
        assert "guest:guest" not in logs
    finally:
        ch2 = await conn.channel()
        await ch2.queue_delete(queue_name)
        await conn.close()
        await a.down()
        await b.down()


async def test_existing_queue_without_cluster_arguments_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An upgrade: queues declared by the first release, a config that adds the limits."""
    prefix = f"t{uid()}"
    ch_settings = ChannelSettings.model_validate({"name": "ops", "type": "console"})
    old = AmqpSettings(prefix=prefix)
    new = AmqpSettings(prefix=prefix, delivery_limit=3, quorum_group_size=1)
    conn = await aio_pika.connect(AMQP_URL)
    try:
        await declare_topology(await conn.channel(), old, [ch_settings])
        await declare_topology(await conn.channel(), new, [ch_settings])  # no error
        assert "kept without x-delivery-limit, x-quorum-initial-group-size" in caplog.text
    finally:
        ch = await conn.channel()
        for spec in channel_queues(new, ch_settings):
            await ch.queue_delete(spec.name)
        await ch.exchange_delete(f"{prefix}.alerts")
        await conn.close()


async def test_a_poison_message_ends_in_the_dlq_at_the_delivery_limit() -> None:
    """`[amqp] delivery_limit`: redelivered that often, RabbitMQ dead-letters the message
    to the channel's dead queue with the reason, instead of a redelivery loop."""
    prefix = f"t{uid()}"
    ch_settings = ChannelSettings.model_validate({"name": "ops", "type": "console"})
    s = AmqpSettings(prefix=prefix, delivery_limit=2)
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()
        await declare_topology(ch, s, [ch_settings])
        work = await ch.declare_queue(s.notify_queue("ops"), passive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"poison"), routing_key=work.name)
        deliveries = 0
        while (msg := await work.get(fail=False, timeout=5)) is not None:
            deliveries += 1
            await msg.nack(requeue=True)  # what a worker that fails before settling does
            assert deliveries < 10, "redelivered without end"
        assert deliveries == 3  # the first delivery and two redeliveries
        dead = await ch.declare_queue(s.dead_queue("ops"), passive=True)
        got = None
        for _ in range(50):
            if (got := await dead.get(fail=False, no_ack=True)) is not None:
                break
            await asyncio.sleep(0.1)
        assert got is not None
        assert got.body == b"poison"
        deaths = got.headers["x-death"]
        assert isinstance(deaths, list)
        assert deaths[0]["reason"] == "delivery_limit"  # type: ignore[index,call-overload]
    finally:
        ch = await conn.channel()
        for spec in channel_queues(s, ch_settings):
            await ch.queue_delete(spec.name)
        await ch.exchange_delete(f"{prefix}.alerts")
        await conn.close()
