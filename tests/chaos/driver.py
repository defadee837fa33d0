"""The chaos and soak driver: sensord as a subprocess under load and a fault schedule, then
a reconciliation against what the driver itself published. See docs/chaos.md.

Load: `sensord-sim` (a subprocess) publishes the background fleet at `rate` readings/s;
the plan publisher (tests/chaos/publisher.py) publishes the alert plan, whose transitions
the reference evaluator (tests/chaos/plan.py) computes from the plan itself.

Faults go through the test's own processes only: a TCP proxy in front of the shared
RabbitMQ (cut, flaps), a private Mosquitto (restart), sensord (SIGKILL), the webhook sink
(503) and the plan publisher (a malformed burst).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from tests.chaos.plan import (
    RULES_YAML,
    AlertPlan,
    Fault,
    FaultKind,
    Transition,
    schedule,
)
from tests.chaos.publisher import PlanPublisher
from tests.support import (
    AMQP_URL,
    PrivateMosquitto,
    SensordProcess,
    TcpProxy,
    WebhookSink,
    delete_amqp,
    delete_mqtt_session,
    uid,
)

RECOVERY_TARGET = 10.0  # seconds from a fault's end to a drained backlog (the target)
RECOVERY_LIMIT = 120.0  # how long the driver waits for a recovery before giving up on it
DRAIN_LIMIT = 120.0  # how long the driver waits at the end for everything to arrive
RSS_GROWTH_TARGET = 5.0  # percent, between minute 2 and the end of a soak
# Mosquitto's `max_inflight_messages` in PrivateMosquitto: at most this many messages are
# delivered to sensord and not yet acknowledged, so processed again after a cut or a kill
MQTT_INFLIGHT = 100
# a target down for a minute is retried for about three; back up, the longest wait is
# max_delay, plus `delay` per event held behind an earlier one of its alert
WEBHOOK_RETRY = {"max_attempts": 100, "delay": "250ms", "max_delay": "2s"}


@dataclass
class Options:
    mode: str  # chaos | soak
    duration: float  # seconds of load
    rate: float  # sim readings per second (the whole fleet)
    workdir: Path
    faults: bool = True
    devices: int = 12  # alert-plan devices
    step: float = 0.5  # seconds between two readings of one plan device
    seed: int = 7
    sample_interval: float = 2.0
    log: bool = True  # progress lines on stderr


@dataclass
class FaultRecord:
    kind: str
    at_s: float  # started, seconds after the load started
    duration_s: float
    recovery_s: float | None = None  # fault end -> backlog drained; None: never within limit
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    t: float  # seconds after the load started
    pid: int
    rss_kb: int
    fds: int


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(VmRSS in kB, open file descriptors) of a live process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None


def to_ms(rfc3339: str) -> int:
    return round(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def invalid_by_reason(metrics: dict[str, float]) -> dict[str, float]:
    prefix = 'sensord_readings_invalid_total{reason="'
    return {k[len(prefix) : -2]: v for k, v in metrics.items() if k.startswith(prefix) and v}


class ChaosRun:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tag = uid()
        self.topic_root = f"chaos-{self.tag}"
        self.faults: list[Fault] = schedule(opts.duration) if opts.faults else []
        self.records: list[FaultRecord] = []
        self.samples: list[Sample] = []
        self.runs: list[dict[str, float]] = []  # the last /metrics of each finished sensord
        self.last_metrics: dict[str, float] = {}
        self.t_load = 0.0
        self.sink = WebhookSink()
        self.events: list[str] = []  # progress log
        self.sim_summary: dict[str, Any] = {}
        (opts.workdir / "broker").mkdir(parents=True, exist_ok=True)
        (opts.workdir / "sensord").mkdir(parents=True, exist_ok=True)
        self.broker = PrivateMosquitto(opts.workdir / "broker")
        # sensord reaches both brokers through proxies: RabbitMQ to cut it, MQTT to stop
        # sensord's intake for an exact count just before a SIGKILL (docs/chaos.md)
        self.amqp_proxy = TcpProxy(5672)
        self.mqtt_proxy: TcpProxy | None = None
        self.sensord = SensordProcess(
            workdir=opts.workdir / "sensord",
            prefix=f"chaos{self.tag}",
            topic_root=self.topic_root,
        )
        self.plan: AlertPlan | None = None
        self.publisher: PlanPublisher | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self._amqp: aio_pika.abc.AbstractRobustConnection | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._active = 0  # faults in progress
        self._last_end = 0.0  # monotonic end of the latest fault

    # ---- helpers

    def say(self, msg: str) -> None:
        line = f"[{self.now():7.1f}s] {msg}"
        self.events.append(line)
        if self.opts.log:
            print(line, file=sys.stderr, flush=True)

    def now(self) -> float:
        return time.monotonic() - self.t_load if self.t_load else 0.0

    @property
    def client_id(self) -> str:
        return f"sensord-test-{self.sensord.prefix}"

    def configure(self) -> None:
        s = self.sensord
        s.rules_yaml = RULES_YAML
        if self.opts.faults:
            s.amqp_url = AMQP_URL.replace(":5672", f":{self.amqp_proxy.port}")
            assert self.mqtt_proxy is not None
            s.mqtt_port = self.mqtt_proxy.port
        else:  # a soak: straight to the brokers, no proxy's CPU in the way
            s.mqtt_port = self.broker.port
        s.extra_toml = '[ingest.units]\ntemperature = "C"\n'
        s.channels = [
            {
                "name": "hook",
                "type": "webhook",
                "url": self.sink.url,
                "severities": ["critical"],
                "retry": WEBHOOK_RETRY,
            }
        ]
        s.write_config()
        s.config_override = s.config_path.read_text().replace(
            "persistent_session = false", "persistent_session = true"
        )

    def retry_queues(self) -> list[str]:
        return [q for q in self.sensord.queues() if ".retry." in q]

    async def queue_depths(self, names: list[str]) -> dict[str, int]:
        if self._amqp is None:
            self._amqp = await aio_pika.connect_robust(AMQP_URL)
        out: dict[str, int] = {}
        ch = await self._amqp.channel()
        try:
            for name in names:
                q = await ch.declare_queue(name, passive=True)
                out[name] = int(q.declaration_result.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()
        return out

    async def scrape(self) -> dict[str, float] | None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            metrics = await asyncio.wait_for(self.sensord.metrics(), 5)
            self.last_metrics = metrics
            return metrics
        return None

    async def ready(self) -> bool:
        """/readyz says "ready" (not degraded): MQTT and RabbitMQ connected."""
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            status, text = await asyncio.wait_for(self.sensord.get("/readyz"), 5)
            return status == 200 and json.loads(text).get("status") == "ready"
        return False

    # ---- the webhook target's view

    def delivered(self) -> tuple[list[tuple[str, Transition]], int]:
        """(event id, transition) of each distinct event delivered, in arrival order, and
        how many deliveries repeated an event id already delivered."""
        seen: set[str] = set()
        out: list[tuple[str, Transition]] = []
        repeats = 0
        for event_id, body in zip(self.sink.event_ids, self.sink.bodies, strict=True):
            if event_id in seen:
                repeats += 1
                continue
            seen.add(event_id)
            for alert in body["alerts"]:
                status = alert["status"]
                ts = alert["startsAt"] if status == "firing" else alert["endsAt"]
                out.append((event_id, Transition(alert["labels"]["device"], status, to_ms(ts))))
        return out, repeats

    def expected_so_far(self) -> list[Transition]:
        assert self.plan is not None
        assert self.publisher is not None
        return self.plan.expected(self.publisher.acked)

    # ---- the sampler

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            proc = self.sensord.proc
            if proc is not None and proc.poll() is None:
                got = proc_sample(proc.pid)
                if got is not None:
                    self.samples.append(Sample(round(self.now(), 1), proc.pid, *got))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.opts.sample_interval)

    # ---- faults

    async def wait_recovered(self, ended: float, fault: FaultRecord) -> None:
        """Until sensord is ready, holds no alert, no retry queue holds a message and every
        transition of the plan readings published before the fault ended was delivered."""
        due = {t.key for t in self.expected_so_far()}
        retry = self.retry_queues()
        deadline = time.monotonic() + RECOVERY_LIMIT
        # when each condition first held, seconds after the end: what the recovery waited on
        first: dict[str, float] = {}
        while time.monotonic() < deadline:
            got = {t.key for _, t in self.delivered()[0]}
            metrics = await self.scrape()
            depths = await self.queue_depths(retry)
            held = {
                "ready": await self.ready(),
                "outbox_empty": metrics is not None
                and metrics.get("sensord_outbox_pending", 1) == 0,
                "retry_empty": not any(depths.values()),
                "transitions_delivered": due <= got,
            }
            for name, ok in held.items():
                if ok and name not in first:
                    first[name] = round(time.monotonic() - ended, 2)
            if all(held.values()):
                fault.recovery_s = round(time.monotonic() - ended, 2)
                fault.detail["first_held_s"] = first
                self.say(f"recovered from {fault.kind} in {fault.recovery_s} s")
                return
            await asyncio.sleep(0.2)
        fault.detail["first_held_s"] = first
        missing = len(due - {t.key for _, t in self.delivered()[0]})
        self.say(f"NOT recovered from {fault.kind} within {RECOVERY_LIMIT} s ({missing} missing)")

    async def kill_sensord(self, record: FaultRecord) -> float:
        """Stop sensord's MQTT intake (proxy cut), take its exact counts, SIGKILL it while
        its outbox, notifications and retries carry on, restart it. Returns the restart."""
        assert self.mqtt_proxy is not None
        assert self.sensord.proc is not None
        await self.mqtt_proxy.down()
        previous = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # counts settle once the last batch is processed
            metrics = await self.scrape()
            total = None if metrics is None else metrics.get("sensord_mqtt_messages_total")
            if total is not None and total == previous:
                break
            previous = total
            await asyncio.sleep(0.3)
        assert metrics is not None
        record.detail["outbox_pending_at_kill"] = metrics.get("sensord_outbox_pending", 0)
        record.detail["webhook_requests_at_kill"] = self.sink.requests
        self.sensord.proc.send_signal(signal.SIGKILL)
        self.sensord.proc.wait()
        self.runs.append(metrics)
        self.last_metrics = {}
        await self.mqtt_proxy.up()
        self.sensord.start()
        restarted = time.monotonic()
        await self.sensord.wait_started(timeout=60)
        return restarted

    async def inject(self, fault: Fault) -> None:
        """At its time, inject the fault, end it, and measure the recovery: from the end of
        the last fault active at that moment, since overlapping faults recover together."""
        if (wait := fault.at - self.now()) > 0:
            await asyncio.sleep(wait)
        self._active += 1
        try:
            rec, ended = await self._inject(fault)
        finally:
            self._active -= 1
        self._last_end = max(self._last_end, ended)
        while self._active:
            rec.detail["overlapped"] = True
            await asyncio.sleep(0.1)
        await self.wait_recovered(self._last_end, rec)

    async def _inject(self, fault: Fault) -> tuple[FaultRecord, float]:
        rec = FaultRecord(fault.kind.value, round(self.now(), 1), fault.duration)
        self.records.append(rec)
        self.say(f"fault: {fault.kind} ({fault.duration:g} s, count {fault.count})")
        if fault.kind is FaultKind.RABBITMQ_CUT:
            await self.amqp_proxy.down()
            await asyncio.sleep(fault.duration)
            await self.amqp_proxy.up()
            ended = time.monotonic()
        elif fault.kind is FaultKind.RABBITMQ_FLAP:
            for _ in range(fault.count):
                await self.amqp_proxy.down()
                await asyncio.sleep(fault.duration)
                await self.amqp_proxy.up()
                await asyncio.sleep(fault.duration * 1.5)
            ended = time.monotonic()
            rec.duration_s = round(fault.count * fault.duration * 2.5, 1)
        elif fault.kind is FaultKind.MOSQUITTO_RESTART:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.sleep(fault.duration)
            await asyncio.to_thread(self.broker.start)
            ended = time.monotonic()
        elif fault.kind is FaultKind.SIGKILL:
            ended = await self.kill_sensord(rec)
        elif fault.kind is FaultKind.WEBHOOK_503:
            self.sink.fail_with = 503
            await asyncio.sleep(fault.duration)
            self.sink.fail_with = None
            ended = time.monotonic()
        else:
            assert self.publisher is not None
            before = self.publisher.bursts_done()
            self.publisher.burst(fault.count)
            while self.publisher.bursts_done() == before:
                await asyncio.sleep(0.1)
            ended = time.monotonic()
        return rec, ended

    # ---- the run

    def start_sim(self) -> None:
        kinds = "temperature,humidity,pressure,co2,power,door"
        sensors = 10 if self.opts.rate >= 1000 else 5
        cmd = [
            sys.executable,
            "-m",
            "simulators",
            "--mqtt",
            f"mqtt://127.0.0.1:{self.broker.port}",
            "--topic-root",
            self.topic_root,
            "--sites",
            "4",
            "--sensors",
            str(sensors),
            "--kinds",
            kinds,
            "--total-rate",
            str(self.opts.rate),
            "--duration",
            str(self.opts.duration),
            "--qos",
            "1",
            "--seed",
            str(self.opts.seed),
            "--client-id",
            f"chaos-sim-{self.tag}",
            "--quiet",
            "--json",
        ]
        out = (self.opts.workdir / "sim.json").open("wb")
        err = (self.opts.workdir / "sim.err").open("wb")
        self.sim = subprocess.Popen(cmd, stdout=out, stderr=err)
        out.close()
        err.close()

    async def drain(self) -> None:
        """After the load: wait until every expected transition was delivered and sensord
        counted at least every message published, then a little longer for repeats."""
        published = self.published_min()
        expected = {t.key for t in self.expected_so_far()}
        deadline = time.monotonic() + DRAIN_LIMIT
        while time.monotonic() < deadline:
            got = {t.key for _, t in self.delivered()[0]}
            metrics = await self.scrape()
            counted = self.counted(metrics or {})
            if expected <= got and counted >= published:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # a repeated notification would arrive now

    def published_min(self) -> int:
        assert self.publisher is not None
        return (
            int(self.sim_summary.get("sent", 0))
            + self.publisher.acked
            + sum(self.publisher.burst_acked.values())
        )

    def counted(self, current: dict[str, float]) -> float:
        """Messages sensord read as readings or refusals, over every run so far."""
        return sum(
            m.get("sensord_readings_total", 0) + sum(invalid_by_reason(m).values())
            for m in [*self.runs, current]
        )

    async def load(self, stop_sampler: asyncio.Event) -> None:
        """The load and the fault schedule, until the sim and the plan are done."""
        opts = self.opts
        self.t_load = time.monotonic()
        self.plan = AlertPlan(
            opts.seed, opts.devices, opts.step, opts.duration, int(time.time() * 1000)
        )
        self.publisher = PlanPublisher(self.broker.port, self.plan, self.topic_root)
        self.publisher.start(self.t_load)
        self.start_sim()
        self.say(f"load started: sim {opts.rate:g}/s, plan {len(self.plan.readings)} readings")
        self._sampler = asyncio.create_task(self.sampler(stop_sampler))
        # faults may overlap (a SIGKILL while the target answers 503): one task each
        await asyncio.gather(*(self.inject(fault) for fault in self.faults))
        while (wait := opts.duration - self.now()) > 0:
            await asyncio.sleep(min(wait, 5))
            if opts.mode == "soak":
                self.say(f"soak: {len(self.samples)} samples, rss {self.rss_now()} kB")
        assert self.sim is not None
        rc = await asyncio.to_thread(self.sim.wait, 60)
        text = (opts.workdir / "sim.json").read_text().strip()
        self.sim_summary = json.loads(text.splitlines()[-1]) if text else {}
        self.sim_summary["returncode"] = rc
        await asyncio.to_thread(self.publisher.join, 60)
        self.say(f"load done: sim {self.sim_summary}")

    async def run(self) -> dict[str, Any]:
        started = time.time()
        self.broker.start()
        self.mqtt_proxy = TcpProxy(self.broker.port)
        await self.mqtt_proxy.up()
        await self.amqp_proxy.up()
        await self.sink.start()
        self.configure()
        stop_sampler = asyncio.Event()
        try:
            self.sensord.start()
            await self.sensord.wait_ready(timeout=60)
            while "connected to RabbitMQ" not in self.sensord.stderr():
                await asyncio.sleep(0.1)
            await self.load(stop_sampler)
            await self.drain()
            stop_sampler.set()
            if self._sampler is not None:
                await self._sampler
            final = await self.scrape()
            assert final is not None, "sensord does not answer at the end"
            depths = await self.queue_depths(self.sensord.queues())
            rc_stop = await self.sensord.stop(timeout=30)
            self.runs.append(final)
            return self.report(started, depths, rc_stop)
        finally:
            stop_sampler.set()
            if self._sampler is not None and not self._sampler.done():
                self._sampler.cancel()
            await self.cleanup()

    def rss_now(self) -> int:
        return self.samples[-1].rss_kb if self.samples else 0

    async def cleanup(self) -> None:
        # the processes first: nothing of the run may outlive it, whatever hangs below
        for proc in (self.sim, self.sensord.proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.publisher is not None:
            self.publisher.close()
        if self._amqp is not None:
            with contextlib.suppress(Exception):
                await self._amqp.close()
        await delete_amqp(self.sensord.prefix, self.sensord.queues())
        if self.broker.proc is None:
            self.broker.start()
        await asyncio.to_thread(delete_mqtt_session, self.client_id, self.broker.port)
        self.broker.stop()
        await self.amqp_proxy.down()
        if self.mqtt_proxy is not None:
            await self.mqtt_proxy.down()
        await self.sink.stop()

    # ---- the reconciliation

    def transitions_report(self) -> dict[str, Any]:
        # the transitions of the plan readings that reached the broker (all of them, unless
        # the plan publisher was stopped early)
        expected = self.expected_so_far()
        delivered, repeats = self.delivered()
        want = {t.key for t in expected}
        counts: dict[tuple[str, str, int], int] = {}
        for _, t in delivered:
            counts[t.key] = counts.get(t.key, 0) + 1
        lost = sorted(want - counts.keys())
        unexpected = sorted(k for k in counts if k not in want)
        duplicated = sum(n - 1 for k, n in counts.items() if k in want and n > 1)
        per_device: dict[str, list[tuple[str, str, int]]] = {}
        for t in expected:
            per_device.setdefault(t.device, []).append(t.key)
        got_device: dict[str, list[tuple[str, str, int]]] = {}
        for _, t in delivered:
            got_device.setdefault(t.device, []).append(t.key)
        out_of_order = []
        for device, keys in sorted(per_device.items()):
            seq = [k for k in got_device.get(device, []) if k in want]
            firsts = list(dict.fromkeys(seq))  # first delivery of each, in arrival order
            if firsts != [k for k in keys if k in counts]:
                out_of_order.append(device)
        return {
            "expected": len(expected),
            "delivered": len({k for k in counts if k in want}),
            "lost": len(lost),
            "duplicated": duplicated,
            "unexpected": len(unexpected),
            "out_of_order_devices": out_of_order,
            "repeated_event_ids": repeats,  # same event id again: dropped by idempotency
            "webhook_requests": self.sink.requests,
            "lost_examples": [list(k) for k in lost[:5]],
            "unexpected_examples": [list(k) for k in unexpected[:5]],
        }

    def readings_report(self) -> dict[str, Any]:
        assert self.publisher is not None
        sim_sent = int(self.sim_summary.get("sent", 0))
        sim_errors = int(self.sim_summary.get("errors", 0))
        published = self.published_min()
        invalid: dict[str, float] = {}
        for m in self.runs:
            for reason, n in invalid_by_reason(m).items():
                invalid[reason] = invalid.get(reason, 0) + n
        processed = sum(m.get("sensord_readings_total", 0) for m in self.runs)
        duplicates = sum(m.get("sensord_readings_duplicate_total", 0) for m in self.runs)
        messages = sum(m.get("sensord_mqtt_messages_total", 0) for m in self.runs)
        accounted = processed + sum(invalid.values())
        kills = sum(1 for r in self.records if r.kind == FaultKind.SIGKILL)
        restarts = sum(1 for r in self.records if r.kind == FaultKind.MOSQUITTO_RESTART)
        # what may be counted twice: messages sensord processed but had not acknowledged
        # when its connection was cut (Mosquitto redelivers them; after a SIGKILL the new
        # run does not know it saw them), sim publishes in flight when the broker went
        # away (counted as errors by the sim, maybe received), plan repeats after a reconnect
        bound = MQTT_INFLIGHT * (kills + restarts) + sim_errors + self.publisher.reconnects
        burst_expected = dict(self.publisher.burst_acked)
        reasons_ok = all(invalid.get(r, 0) >= n for r, n in burst_expected.items())
        unexpected_reasons = {r: n for r, n in invalid.items() if r not in burst_expected}
        return {
            "published": published,
            "published_detail": {
                "sim_acked": sim_sent,
                "sim_errors": sim_errors,
                "plan_acked": self.publisher.acked,
                "malformed_acked": sum(burst_expected.values()),
            },
            "processed": int(processed),
            "invalid": {k: int(v) for k, v in sorted(invalid.items())},
            "invalid_expected": dict(sorted(burst_expected.items())),
            "duplicates_skipped": int(duplicates),
            "mqtt_messages": int(messages),
            "accounted": int(accounted),
            "accounted_pct": round(100.0 * min(accounted, published) / published, 4)
            if published
            else 0.0,
            "excess": int(accounted - published),
            "excess_bound": bound,
            "ok": published <= accounted <= published + bound
            and reasons_ok
            and not unexpected_reasons,
        }

    def memory_report(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        # the last sensord process lived through the end: its samples are the trend
        last_pid = self.samples[-1].pid
        own = [s for s in self.samples if s.pid == last_pid]
        after2 = [s for s in own if s.t >= 120.0]
        base = after2[0] if after2 else own[0]
        end = own[-1]
        return {
            "samples": len(self.samples),
            "sensord_processes": len({s.pid for s in self.samples}),
            "rss_kb": {
                "start": self.samples[0].rss_kb,
                "peak": max(s.rss_kb for s in self.samples),
                "end": end.rss_kb,
                "last_process_start": own[0].rss_kb,
                "minute2": base.rss_kb if after2 else None,
            },
            "fds": {
                "start": self.samples[0].fds,
                "peak": max(s.fds for s in self.samples),
                "end": end.fds,
            },
            # growth of the last process between minute 2 of the run (or its own start,
            # when it started later) and the end
            "growth_from": base.t,
            "rss_growth_pct": round(100.0 * (end.rss_kb - base.rss_kb) / base.rss_kb, 2),
            "fd_growth": end.fds - base.fds,
            "trace": [[s.t, s.rss_kb, s.fds] for s in self.samples[:: max(1, len(own) // 60)]],
        }

    def report(self, started: float, depths: dict[str, int], rc_stop: int) -> dict[str, Any]:
        transitions = self.transitions_report()
        readings = self.readings_report()
        memory = self.memory_report()
        retry = {k: v for k, v in depths.items() if ".retry." in k}
        dead = sum(v for k, v in depths.items() if k.endswith(".dead"))
        quarantine = sum(v for k, v in depths.items() if k.endswith(".quarantine"))
        recoveries = [r.recovery_s for r in self.records]
        targets = {
            "lost_0": transitions["lost"] == 0,
            "duplicated_0": transitions["duplicated"] == 0 and transitions["unexpected"] == 0,
            "in_order": not transitions["out_of_order_devices"],
            "readings_accounted": readings["ok"],
            "retry_queues_empty": not any(retry.values()),
            "dlq_empty": dead == 0,  # the schedule makes nothing permanent
            "quarantine_complete": quarantine == sum(readings["invalid_expected"].values()),
            "recovery_within_10s": all(r is not None and r <= RECOVERY_TARGET for r in recoveries),
            "clean_stop": rc_stop == 0,
        }
        if self.opts.mode == "soak" and memory:
            targets["rss_growth_under_5pct"] = memory["rss_growth_pct"] < RSS_GROWTH_TARGET
        return {
            "mode": self.opts.mode,
            "duration_s": self.opts.duration,
            "rate": self.opts.rate,
            "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "wall_s": round(time.time() - started, 1),
            "faults": [vars(r) for r in self.records],
            "transitions": transitions,
            "readings": readings,
            "queues": {"retry": retry, "dead": dead, "quarantine": quarantine},
            "memory": memory,
            "plan": {
                "devices": self.opts.devices,
                "step_s": self.opts.step,
                "max_late_s": round(self.publisher.late_max, 2) if self.publisher else None,
                "plan_reconnects": self.publisher.reconnects if self.publisher else None,
            },
            "sim": self.sim_summary,
            "sensord_runs": len(self.runs),
            "targets": targets,
            "ok": all(targets.values()),
        }


def summary(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    t, r, m, q = report["transitions"], report["readings"], report["memory"], report["queues"]
    lines = [
        f"sensord {report['mode']}: {report['duration_s']:g} s of load at {report['rate']:g}"
        f" readings/s (+ alert plan), {report['sensord_runs']} sensord run(s),"
        f" wall {report['wall_s']} s",
        "faults injected:",
    ]
    for f in report["faults"]:
        rec = "never" if f["recovery_s"] is None else f"{f['recovery_s']} s"
        lines.append(
            f"  {f['at_s']:7.1f}s  {f['kind']:<18} lasted {f['duration_s']:>5g} s"
            f"  recovered (backlog drained) after {rec}"
        )
    if not report["faults"]:
        lines.append("  none")
    lines += [
        f"transitions: expected {t['expected']}, delivered {t['delivered']},"
        f" duplicated {t['duplicated']}, lost {t['lost']}, unexpected {t['unexpected']},"
        f" out of order on {len(t['out_of_order_devices'])} device(s);"
        f" {t['repeated_event_ids']} repeated event id(s) dropped by idempotency",
        f"readings: published {r['published']}, accounted {r['accounted']}"
        f" ({r['accounted_pct']}%): processed {r['processed']} + refused"
        f" {sum(r['invalid'].values())} {r['invalid']}; excess {r['excess']}"
        f" (bound {r['excess_bound']}), duplicates skipped {r['duplicates_skipped']}",
        f"queues at the end: retry {sum(q['retry'].values())}, dead {q['dead']},"
        f" quarantine {q['quarantine']}",
    ]
    if m:
        rss, fds = m["rss_kb"], m["fds"]
        lines.append(
            f"RSS kB: start {rss['start']}, peak {rss['peak']}, end {rss['end']};"
            f" growth {m['rss_growth_pct']}% from t={m['growth_from']}s;"
            f" fds start {fds['start']}, peak {fds['peak']}, end {fds['end']}"
        )
    failed = [k for k, v in report["targets"].items() if not v]
    lines.append("targets: " + ("all met" if not failed else "MISSED " + ", ".join(failed)))
    return "\n".join(lines)


async def run(opts: Options) -> dict[str, Any]:
    return await ChaosRun(opts).run()
