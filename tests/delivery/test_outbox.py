"""The SQLite outbox: alert events survive RabbitMQ outages and sensord being killed."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import channel_queues
from sensord.delivery import drain as publish
from sensord.delivery.drain import BATCH, OutboxDrain, unique_prefix
from sensord.delivery.outbox import Outbox, OutboxRow, open_state_db
from sensord.events import AlertEvent, Severity
from sensord.notify.console import ConsoleChannelSettings
from sensord.notify.consumer import Notifier
from sensord.ops.metrics import Metrics
from tests.support import (
    AMQP_URL,
    HOT_RULE,
    MqttPublisher,
    SensordProcess,
    WebhookSink,
    delete_amqp,
    delete_mqtt_session,
    running,
    uid,
    wait_for,
)

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _event(i: int, fingerprint: str = "fp") -> AlertEvent:
    return AlertEvent(
        event_id=f"ev-{i}",
        fingerprint=fingerprint,
        status="firing",
        rule="hot",
        severity=Severity.CRITICAL,
        labels={"site": "s", "kind": "temperature"},
        annotations={},
        value=float(i),
        threshold=80.0,
        starts_at=NOW,
        observed_at=NOW,
    )


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_rows_survive_reopening_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sensord.db"
    metrics = Metrics()
    box = Outbox(open_state_db(path), 100, metrics)
    box.add([_event(1), _event(2, "other")])
    assert len(box) == 2
    assert _sample(metrics, "sensord_outbox_pending") == 2
    box.conn.close()

    reopened = Outbox(open_state_db(path), 100, Metrics())
    rows = reopened.head(10)
    assert [r.event_id for r in rows] == ["ev-1", "ev-2"]
    assert rows[0].routing_key == "critical.s.temperature"
    assert AlertEvent.model_validate_json(rows[0].body).value == 1.0
    reopened.delete([rows[0].seq])
    assert [r.event_id for r in reopened.head(10)] == ["ev-2"]
    assert len(reopened) == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_delete_takes_exactly_the_rows_named_whether_consecutive_or_not(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    box = Outbox(open_state_db(path), 100, Metrics())
    box.add([_event(i, f"fp{i}") for i in range(8)])
    seqs = [r.seq for r in box.head(10)]
    box.delete(seqs[:3])  # a run of consecutive numbers: the drain's confirmed prefix
    box.delete([seqs[4], seqs[6]])  # a gap between them
    box.delete([seqs[7], seqs[5]])  # consecutive, in another order
    want = ["ev-3"]
    assert [r.event_id for r in box.head(10)] == want
    on_disk = sqlite3.connect(path).execute("SELECT event_id FROM outbox ORDER BY seq")
    assert [row[0] for row in on_disk] == want
    assert [r.event_id for r in Outbox(open_state_db(path), 100, Metrics()).head(10)] == want


def test_rows_inside_the_callers_transaction_commit_with_it(tmp_path: Path) -> None:
    box = Outbox(open_state_db(tmp_path / "s.db"), 100, Metrics())
    box.conn.execute("BEGIN")
    box.add([_event(1)])
    box.conn.execute("ROLLBACK")  # the transition was not recorded: neither is its event
    assert box.head(10) == []
    assert len(box) == 0


def test_overflow_drops_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    box = Outbox(open_state_db(tmp_path / "s.db"), 3, metrics)
    box.add([_event(i, f"fp{i}") for i in range(5)])
    assert [r.event_id for r in box.head(10)] == ["ev-2", "ev-3", "ev-4"]
    assert len(box) == 3
    assert _sample(metrics, "sensord_alerts_dropped_total") == 2
    assert "outbox full" in caplog.text


def test_a_batch_never_holds_two_events_of_one_alert() -> None:
    rows = [OutboxRow(i, f"e{i}", fp, "k", b"", 0.0) for i, fp in enumerate("abcad")]
    assert [r.fingerprint for r in unique_prefix(rows)] == ["a", "b", "c"]


RULES = HOT_RULE


@pytest.mark.e2e
async def test_alerts_survive_sigkill_while_rabbitmq_is_down_and_arrive_in_order(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    proxy = sensord.amqp_through_proxy()
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    async with running(sensord, ready=False):
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        for value in (90, 70, 91, 71):  # firing, resolved, firing, resolved
            mqtt_pub.publish(topic, str(value))
        held = await sensord.wait_metric("sensord_outbox_pending", 4)
        await asyncio.sleep(1.5)  # a tick or more later, the gauge shows the wait
        held = await sensord.metrics()
        assert held["sensord_outbox_oldest_age_seconds"] >= 1.0
        assert sensord.proc is not None
        sensord.proc.send_signal(signal.SIGKILL)
        sensord.proc.wait()
    assert (sensord.workdir / "var" / "sensord.db").exists()

    await proxy.up()
    try:
        async with running(sensord):
            await wait_for(lambda: len(webhook.bodies) >= 4, timeout=30)
            metrics = await sensord.wait_metric("sensord_outbox_pending", 0, exact=True)
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
    statuses = [a["status"] for b in webhook.bodies for a in b["alerts"]]
    assert statuses == ["firing", "resolved", "firing", "resolved"]
    assert metrics["sensord_outbox_pending"] == 0


@pytest.mark.e2e
async def test_rabbitmq_cut_while_alerts_fire_and_resolve_delivers_each_once_in_order(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    proxy = sensord.amqp_through_proxy()
    await proxy.up()
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    try:
        async with running(sensord):
            await proxy.down()  # the cut: edge and notify lose RabbitMQ
            for device in ("t-1", "t-2", "t-3"):
                topic = f"{sensord.topic_root}/plant-1/{device}/temperature"
                for value in (90, 70, 95):  # firing, resolved, firing
                    mqtt_pub.publish(topic, str(value))
            await sensord.wait_metric("sensord_outbox_pending", 9)
            await asyncio.sleep(3)  # stays cut a while; nothing may get through
            assert webhook.bodies == []
            await proxy.up()
            await wait_for(lambda: len(webhook.bodies) >= 9, timeout=40)
            await sensord.wait_metric("sensord_outbox_pending", 0, exact=True)
            await asyncio.sleep(1)  # a duplicate would show up now
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
    per_device: dict[str, list[str]] = {}
    for body in webhook.bodies:
        for alert in body["alerts"]:
            per_device.setdefault(alert["labels"]["device"], []).append(alert["status"])
    assert per_device == {d: ["firing", "resolved", "firing"] for d in ("t-1", "t-2", "t-3")}


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_sigkill_at_several_points_loses_no_transition_and_repeats_none(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    """sensord SIGKILLed right after readings arrive, at several delays, then restarted with
    the same state file and MQTT session: every transition is notified exactly once."""
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    sensord.write_config()
    sensord.config_override = sensord.config_path.read_text().replace(
        "persistent_session = false", "persistent_session = true"
    )
    client_id = f"sensord-test-{sensord.prefix}"
    devices = [f"k-{i}" for i in range(6)]
    delays = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    try:
        for device, delay in zip(devices, delays, strict=True):
            sensord.start()
            await sensord.wait_ready()
            await wait_for(lambda: "connected to RabbitMQ" in sensord.stderr())
            topic = f"{sensord.topic_root}/plant-1/{device}/temperature"
            mqtt_pub.publish(topic, "90")
            mqtt_pub.publish(topic, "70")
            await asyncio.sleep(delay)
            assert sensord.proc is not None
            sensord.proc.send_signal(signal.SIGKILL)
            sensord.proc.wait()
        async with running(sensord):  # the last restart drains what is left
            await wait_for(lambda: len(webhook.bodies) >= 2 * len(devices), timeout=60)
            await asyncio.sleep(2)  # a repeated notification would arrive now
            assert await sensord.stop() == 0
    finally:
        delete_mqtt_session(client_id)
    # at-least-once: a kill between the target's 2xx and sensord recording the event id
    # repeats that very event (same X-Sensord-Event-Id, at most once per kill); it never
    # makes a new one, and nothing is lost
    per_device: dict[str, list[str]] = {}
    seen: set[str] = set()
    repeats = 0
    for event_id, body in zip(webhook.event_ids, webhook.bodies, strict=True):
        if event_id in seen:
            repeats += 1
            continue
        seen.add(event_id)
        for alert in body["alerts"]:
            per_device.setdefault(alert["labels"]["device"], []).append(alert["status"])
    assert per_device == {d: ["firing", "resolved"] for d in devices}
    assert repeats <= len(delays)


class _Recorder:
    """A channel that notes how many alerts the outbox still held at each send."""

    name = "rec"

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.held_at_send: list[int] = []
        self.sent: list[str] = []

    async def start(self) -> None:
        pass

    async def send(self, event: AlertEvent) -> None:
        self.held_at_send.append(len(self.outbox))
        self.sent.append(event.event_id)

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("max_hold", [10.0, 0.0])
async def test_a_backlog_reaches_rabbitmq_before_it_is_notified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_hold: float
) -> None:
    """One process with both roles, one event loop: while more than a batch is held, the
    notify consumers wait, so a backlog moves to RabbitMQ (durable) at full speed first;
    then every event is notified, once. They wait `MAX_HOLD` at most (0: not at all)."""
    monkeypatch.setattr(publish, "MAX_HOLD", max_hold)
    amqp = AmqpSettings.model_validate({"url": AMQP_URL, "prefix": f"t{uid()}"})
    channel = ConsoleChannelSettings.model_validate({"name": "rec", "type": "console"})
    metrics = Metrics()
    outbox = Outbox(open_state_db(tmp_path / "s.db"), 10_000, metrics)
    n = BATCH * 4
    drain = OutboxDrain(amqp, outbox, metrics)
    # a burst of this run (rows found at start would be marked re-sent: the consumer
    # would ask the fleet first, notify/fleet.py, and the drain would be done by then)
    outbox.add([_event(i, f"fp-{i}") for i in range(n)])
    rec = _Recorder(outbox)
    notifier = Notifier(amqp, [channel], [rec], metrics, gate=drain.caught_up)
    stop = asyncio.Event()
    try:
        await notifier.start()
        drain.ready.set()
        task = asyncio.create_task(drain.run(stop))
        await wait_for(lambda: len(rec.sent) >= n, timeout=60)
        stop.set()
        await task
    finally:
        stop.set()
        await notifier.stop(grace=1)
        await drain.close()
        queues = [q.name for q in channel_queues(amqp, channel)]
        await delete_amqp(amqp.prefix, queues)
    assert sorted(rec.sent) == sorted(f"ev-{i}" for i in range(n))
    assert len(outbox) == 0
    if max_hold:
        assert max(rec.held_at_send) <= BATCH  # nothing notified while a backlog was held
    else:
        assert max(rec.held_at_send) > BATCH  # the hold ended: notified meanwhile


def test_a_failed_insert_inside_the_callers_transaction_leaves_no_phantom_row(
    tmp_path: Path,
) -> None:
    """The mirror must not take rows from a transaction that will roll back."""
    box = Outbox(open_state_db(tmp_path / "s.db"), 100, Metrics())
    box.add([_event(1)])
    box.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.event_id = 'ev-3'"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    box.conn.execute("BEGIN")
    box.add([_event(2, "other")])  # staged: its transaction has not ended
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        box.add([_event(3, "third")])  # fails inside the caller's transaction
    box.conn.execute("ROLLBACK")
    assert [r.event_id for r in box.head(10)] == ["ev-1"]
    assert len(box) == 1
    box.add([_event(4, "fourth")])  # and the mirror goes on from the table
    assert [r.event_id for r in box.head(10)] == ["ev-1", "ev-4"]


async def test_a_stop_ends_the_drain_between_batches_not_after_the_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` returns once the batches in flight are settled; the rest is the stop's
    `flush` (bounded by stop_grace), not a whole backlog drained before stopping."""
    monkeypatch.setattr(publish, "BATCH", 10)
    amqp = AmqpSettings.model_validate({"url": AMQP_URL, "prefix": f"t{uid()}"})
    channel = ConsoleChannelSettings.model_validate({"name": "rec", "type": "console"})
    outbox = Outbox(open_state_db(tmp_path / "s.db"), 10_000, Metrics())
    outbox.add([_event(i, f"fp-{i}") for i in range(3000)])
    drain = OutboxDrain(amqp, outbox, Metrics())
    queues = [q.name for q in channel_queues(amqp, channel)]
    stop = asyncio.Event()
    try:
        from sensord.amqp.topology import declare_topology_once

        await declare_topology_once(amqp, [channel])
        drain.ready.set()
        task = asyncio.create_task(drain.run(stop))
        await wait_for(lambda: drain.published >= 50, timeout=30)
        stop.set()
        at_stop = drain.published
        await asyncio.wait_for(task, 10)
        # only the batches already in flight were settled after the stop
        assert drain.published - at_stop <= publish.DEPTH * 10
        assert len(outbox) == 3000 - drain.published > 0
    finally:
        stop.set()
        await drain.close()
        await delete_amqp(amqp.prefix, queues)
