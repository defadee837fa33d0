"""A private Mosquitto on a free loopback port, owned by the benchmark and always stopped.

The machine's own Mosquitto keeps its stock limits (1000 queued messages per client,
FACTS.md) and may be shared with tests; a benchmark runs its own broker with
`max_queued_messages 0` so that a 100k backlog is kept, not dropped.
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"
MAX_PACKET_ID = 65_535


class BrokerError(RuntimeError):
    """The private broker could not be started or did not do what was asked in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def broker_config(port: int, max_inflight: int) -> str:
    """The broker config; every limit that shapes the measurement is written out here."""
    if not 1 <= max_inflight <= MAX_PACKET_ID:
        # 0 means "no maximum" (man mosquitto.conf): a 100k backlog would then have more
        # than 65,535 PUBLISHes unacknowledged, and 16-bit packet ids wrap (FACTS.md).
        msg = f"max_inflight_messages must be within 1..{MAX_PACKET_ID}, got {max_inflight}"
        raise ValueError(msg)
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            # 0 = no maximum: the whole backlog stays queued (stock default 1000 drops it)
            "max_queued_messages 0",
            # outgoing QoS 1 window per client; the default, 20, makes the drain wait on
            # round trips instead of on the receiver
            f"max_inflight_messages {max_inflight}",
            # the log is how we learn that a subscription is in place; stderr, because
            # stdout into a pipe is block-buffered and the lines would come late
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type subscribe",
            "",
        ]
    )


class PrivateMosquitto:
    """`with PrivateMosquitto(...) as broker:` starts mosquitto and stops it on any exit."""

    def __init__(self, *, max_inflight: int, executable: str = MOSQUITTO) -> None:
        self.max_inflight = max_inflight
        self.executable = executable
        self.port = free_port()
        self.version = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="sensord-bench-")
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> PrivateMosquitto:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(broker_config(self.port, self.max_inflight), encoding="utf-8")
        self._proc = subprocess.Popen(
            [self.executable, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, name="mosquitto-log", daemon=True)
        self._reader.start()
        self._wait_listening(timeout=10.0)
        self.version = _mosquitto_version(self.executable)

    def _read_log(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def _wait_listening(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise BrokerError(f"mosquitto did not listen on port {self.port} in {timeout}s")

    def log(self) -> str:
        with self._changed:
            return "\n".join(self._lines[-20:])

    def wait_subscribed(self, client_id: str, topic: str, timeout: float = 10.0) -> None:
        """Block until the broker has logged `client_id`'s subscription to `topic`."""
        pattern = re.compile(rf"(^|\s){re.escape(client_id)} [012] {re.escape(topic)}$")
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for line in self._lines[seen:]:
                    if pattern.search(line):
                        return
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError(f"{client_id} did not subscribe to {topic} in {timeout}s")
                self._changed.wait(left)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        self._tmp.cleanup()


def _mosquitto_version(executable: str) -> str:
    out = subprocess.run(
        [executable, "-h"], capture_output=True, text=True, timeout=5.0, check=False
    ).stdout
    m = re.search(r"mosquitto version (\S+)", out)
    return m.group(1) if m else "unknown"
