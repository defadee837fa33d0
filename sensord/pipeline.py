"""The alert pipeline: a batch of readings -> rules -> transitions -> one transaction -> publish.

The MQTT bridge hands every reading of a read batch to `on_reading` (synchronous, no I/O:
the status page's history and the rule engine), then calls `end_batch` once before it
acknowledges the batch's QoS 1 messages. `end_batch` persists everything the batch changed
in ONE SQLite transaction — the rule states, the alerts' lifecycle, the events to publish
(outbox rows) and the redelivery guard of each reading that changed an alert — and wakes
the outbox drain. An alert storm costs one commit per batch, not one per transition, and
a message is acknowledged only after what it caused is on disk.

The ticks (deadman timers, repeats), a rule reload and the restore at start go through
`commit` too, each in a transaction of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter

from sensord.alerts.lifecycle import build_event
from sensord.alerts.store import AlertStore, RepeatPolicy
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox
from sensord.events import AlertEvent, Reading
from sensord.http.history import History
from sensord.ops.metrics import Metrics
from sensord.rules import AlertTransition, Rule, RuleEngine, Snapshot
from sensord.state.store import StateStore

log = logging.getLogger("sensord")

SensorKey = tuple[str, str, str]  # (topic, device, kind): the duplicate guard's key


class AlertPipeline:
    """Rule evaluation per reading; persistence and publishing per batch."""

    def __init__(
        self,
        engine: RuleEngine,
        *,
        state: StateStore,
        alerts: AlertStore,
        outbox: Outbox,
        drain: OutboxDrain,
        history: History,
        metrics: Metrics,
        repeats: RepeatPolicy,
        tap: Callable[[Reading], None] | None = None,
        derive_ids: bool = False,
    ) -> None:
        """`derive_ids` (a central rules process): event ids from the transitions
        (alerts/lifecycle.derived_event_id), so that a replay repeats them."""
        self.engine = engine
        self.state = state
        self.alerts = alerts
        self.outbox = outbox
        self.drain = drain
        self.history = history
        self.metrics = metrics
        self.repeats = repeats
        # every accepted reading, as is, to the telemetry stream's list (its bound append:
        # the cheapest call there is; the stream encodes off this path)
        self._tap = tap
        self.derive_ids = derive_ids
        # what the current batch changed, committed by end_batch
        self._transitions: list[AlertTransition] = []
        self._guards: dict[SensorKey, float] = {}
        self._now = 0.0
        # sensord_alerts_total's child per (severity, status): labels() costs ~3x an inc()
        self._alert_counts: dict[tuple[str, str], Counter] = {}

    # ---- per reading (the bridge's sink): no I/O, no allocation beyond the engine's

    def on_reading(self, reading: Reading, now: float, key: SensorKey | None = None) -> None:
        """`key` (the bridge's duplicate-guard key) comes with a reading stamped by its
        sender: when it changes an alert, its time is kept with the change, so that its
        redelivery after a restart is skipped (`MqttBridge.remember`)."""
        self.history.record(reading, now)  # O(1), no I/O: the status page's plots
        tap = self._tap
        if tap is not None:
            tap(reading)
        transitions = self.engine.evaluate(reading, now)
        if transitions:
            self._transitions += transitions
            if key is not None:
                self._guards[key] = reading.ts
        self._now = now

    def on_late(self, reading: Reading, now: float) -> None:
        """A reading older than its sensor's newest: into the history (the status page
        plots it where it belongs) and the telemetry stream, never to the rules, so it
        cannot move an alert back."""
        self.history.record(reading, now)
        if self._tap is not None:
            self._tap(reading)

    def end_batch(self, offsets: dict[str, int] | None = None) -> None:
        """After a read batch, before its acknowledgements: one transaction for all of it.
        `offsets` (a central rules process): per readings stream, the next offset to read,
        committed with what the batch caused, so that a restart resumes right after it."""
        if not (self._transitions or self.engine.has_changes or offsets):
            return
        transitions, guards = self._transitions, self._guards
        self._transitions, self._guards = [], {}
        # the time of the batch's last reading; a batch without one changed state that
        # a restore or reload left behind (orphans): now
        self.commit(transitions, self._now or time.time(), guards=guards, offsets=offsets)
        self._now = 0.0

    # ---- one transaction

    def commit(
        self,
        transitions: list[AlertTransition],
        now: float,
        *,
        flush: bool = False,
        guards: dict[SensorKey, float] | None = None,
        offsets: dict[str, int] | None = None,
    ) -> None:
        """Persist what the engine changed, the alerts' lifecycle and the events to
        publish, in one transaction committed before this returns. `flush` adds the
        deadman clocks and the heartbeat time (each tick); `guards` the (sensor key, time)
        of the readings that caused the transitions; `offsets` the streams' next offsets."""
        engine, alerts, metrics = self.engine, self.alerts, self.metrics
        events: list[AlertEvent] = []
        bodies: list[bytes] = []
        for tr in transitions:
            if tr.status == "flapping":  # a marker: logged and counted, never published
                metrics.alerts_flapping.labels(tr.rule.severity.value).inc()
                log.warning(
                    "alert %s %s is flapping: its notifications are held until it settles",
                    tr.rule.name,
                    "/".join(tr.labels.get(k, "?") for k in ("site", "device")),
                )
            else:
                event = build_event(tr, derive_id=self.derive_ids)
                body = event.model_dump_json().encode()  # serialised once: store and outbox
                events.append(event)
                bodies.append(body)
        if not (flush or events or guards or offsets or engine.has_changes):
            return
        if len(events) > 1 and alerts.inhibit:
            # record inhibiting alerts first, so a target firing on the same batch is held;
            # a stable sort: one alert's firing and resolution keep their order
            order = sorted(
                range(len(events)), key=lambda i: not alerts.is_inhibit_source(events[i].labels)
            )
            events = [events[i] for i in order]
            bodies = [bodies[i] for i in order]
        records = engine.take_dirty()
        clocks = engine.clocks() if flush else []
        send: list[AlertEvent] = []
        send_bodies: list[bytes] = []
        with self.state.transaction() as conn:
            self.state.write(
                conn,
                records,
                clocks,
                saved_at=now if flush else None,
                started_at=engine.start if flush else None,
                guards=guards,
                offsets=offsets,
            )
            counts = self._alert_counts
            for event, body in zip(events, bodies, strict=True):
                key = (event.severity.value, event.status)
                count = counts.get(key)
                if count is None:
                    count = counts[key] = metrics.alerts.labels(*key)
                count.inc()
                if event.status == "firing":
                    notify = alerts.fire(event, now, body)
                else:
                    notify = alerts.resolve(event)
                if notify:
                    send.append(event)
                    send_bodies.append(body)
                else:
                    metrics.alerts_suppressed.labels(event.status).inc()
            if send:
                self.outbox.add(send, now, bodies=send_bodies)  # joins this transaction
        if send:
            self.drain.wake()

    # ---- the scheduler's tick and the API's reconcile

    def reconcile(self) -> None:
        """Publish held alerts no longer silenced or inhibited, and repeats that are due."""
        now = time.time()
        self.alerts.gc_silences(now)
        with self.alerts.transaction():
            due = self.alerts.due(now, self.repeats)
            self.outbox.add([e for e, _ in due], now, [targets for _, targets in due])
        if due:
            self.drain.wake()
        self.metrics.outbox_oldest_age.set(self.outbox.oldest_age(now))

    def tick(self, now: float) -> None:
        self.commit(self.engine.tick(now), now, flush=True)
        self.reconcile()

    def flush(self) -> None:
        self.commit([], time.time(), flush=True)

    def restore(self, outage_tolerance: float) -> dict[SensorKey, float]:
        """Before MQTT: take back the alert state; firing alerts are not announced again.
        Returns the duplicate guard's memory (`MqttBridge.remember`): a reading that
        changed an alert, or an older one, redelivered after a SIGKILL (processed, not
        yet acknowledged) is skipped as within a run."""
        snapshot = self.state.load()
        now = time.time()
        transitions = self.engine.restore(snapshot, now, outage_tolerance)
        log.info(
            "state file: %d alert state(s), %d deadman clock(s) restored",
            len(snapshot.records),
            len(snapshot.clocks),
        )
        self.commit(transitions, now, flush=True)
        return self.state.remembered_readings()

    def adopt(self, snapshot: Snapshot, outage_tolerance: float) -> None:
        """A central rules process took a partition over: its saved state joins the
        engine's (`RuleEngine.adopt`), as `restore` does at start for a whole edge."""
        now = time.time()
        self.commit(self.engine.adopt(snapshot, now, outage_tolerance), now)

    def replace_rules(self, rules: list[Rule]) -> None:
        """A rule reload: states of unchanged rules are kept, the others resolve."""
        now = time.time()
        self.commit(self.engine.replace_rules(rules, now), now)
