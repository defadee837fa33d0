"""The plan publisher: the alert plan's readings (and the malformed bursts) over MQTT QoS 1,
one message in flight at a time, each waited for until the broker acknowledged it.

A message not acknowledged when the connection drops stays in paho's queue and is sent
again after the reconnection (paho's own QoS 1 behaviour), so every plan reading reaches
the broker, in order per device, at least once. One in flight at a time keeps the order
and bounds the repeats: at most one per reconnection.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.chaos.plan import AlertPlan, malformed
from tests.support import MQTT_HOST, uid


class PlanPublisher:
    def __init__(self, port: int, plan: AlertPlan, topic_root: str) -> None:
        self.plan = plan
        self.topic_root = topic_root
        self.acked = 0  # plan readings acknowledged: readings[:acked] reached the broker
        self.burst_acked: Counter[str] = Counter()  # malformed messages acknowledged, by reason
        self.reconnects = 0
        self.late_max = 0.0  # the longest a reading went out after its due time (s)
        self._acks: set[int] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._bursts: list[int] = []
        self._bursts_done = 0
        self._t0 = 0.0
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"chaos-plan-{uid()}",
            clean_session=True,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self._connects = 0
        self.client.connect_async(MQTT_HOST, port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_args: Any) -> None:
        with self._cond:
            self._acks.add(mid)
            self._cond.notify_all()

    def _on_connect(self, *_args: Any) -> None:
        self._connects += 1
        self.reconnects = self._connects - 1

    def _send(self, topic: str, payload: bytes) -> bool:
        """Publish and wait for the PUBACK; False when stopped first."""
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            while info.mid not in self._acks:
                if self._stop.is_set():
                    return False
                self._cond.wait(0.2)
            self._acks.discard(info.mid)
        return True

    def burst(self, count: int) -> None:
        """Queue a burst of malformed messages (sent between two plan readings)."""
        with self._cond:
            self._bursts.append(count)

    def bursts_done(self) -> int:
        return self._bursts_done

    def start(self, t0: float) -> None:
        """`t0`: time.monotonic() of the plan's due 0."""
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="chaos-plan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for reading in self.plan.readings:
            while (wait := self._t0 + reading.due - time.monotonic()) > 0:
                self._send_bursts()
                if self._stop.wait(min(wait, 0.05)):
                    return
            self.late_max = max(self.late_max, time.monotonic() - self._t0 - reading.due)
            topic = f"{self.topic_root}/chaos/{reading.device}/temperature"
            if not self._send(topic, reading.payload()):
                return
            self.acked += 1
        self._send_bursts()

    def _send_bursts(self) -> None:
        with self._cond:
            bursts, self._bursts = self._bursts, []
        for count in bursts:
            now_ms = int(time.time() * 1000)
            for i in range(count):
                topic, payload, reason = malformed(i, self.topic_root, now_ms)
                if not self._send(topic, payload):
                    return
                self.burst_acked[reason] += 1
            self._bursts_done += 1

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
