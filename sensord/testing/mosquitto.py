"""A Mosquitto of your own on a free loopback port: started, waited for, always stopped.

Never the machine's shared broker: a test or benchmark that stops, restarts or fills a
broker owns one. Every limit that shapes a measurement is written into the config here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Self

from sensord.errors import SensordError
from sensord.testing.ports import free_port
from sensord.testing.tls import TlsFiles

MOSQUITTO = shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/usr/local/sbin") or (
    "/usr/sbin/mosquitto"
)
MAX_PACKET_ID = 65_535
STOCK_MAX_INFLIGHT = 20  # Mosquitto's default `max_inflight_messages` (man mosquitto.conf)


class BrokerError(SensordError):
    """The broker could not be started or did not do what was asked in time."""


class Mosquitto:
    """`with Mosquitto() as broker:` a private broker on `broker.port`, stopped on any exit.

    `start()` and `stop()` may also be called in turn (a broker outage in a test): the port
    and `workdir` stay, so with `persistence=True` sessions and queued messages survive a
    stop (Mosquitto saves them on SIGTERM). Without a `workdir` a temporary one is made and
    removed on exit. `max_queued_messages` 0 (no maximum) keeps a whole backlog; the stock
    1000 would drop it.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        max_inflight_messages: int = STOCK_MAX_INFLIGHT,
        max_queued_messages: int = 0,
        persistence: bool = False,
        tls: TlsFiles | None = None,
        require_certificate: bool = True,
        users: Mapping[str, str] | None = None,
        extra_config: Sequence[str] = (),
        executable: str = MOSQUITTO,
        start_timeout: float = 10.0,
    ) -> None:
        if not 1 <= max_inflight_messages <= MAX_PACKET_ID:
            # 0 means "no maximum": a 100k backlog would then have more than 65,535
            # PUBLISHes unacknowledged, and 16-bit packet ids wrap (FACTS.md).
            msg = (
                f"max_inflight_messages must be within 1..{MAX_PACKET_ID}, "
                f"got {max_inflight_messages}"
            )
            raise ValueError(msg)
        if max_queued_messages < 0:
            msg = f"max_queued_messages must be 0 (no maximum) or more, got {max_queued_messages}"
            raise ValueError(msg)
        self.max_inflight_messages = max_inflight_messages
        self.max_queued_messages = max_queued_messages
        self.persistence = persistence
        self.tls = tls
        self.require_certificate = require_certificate
        self.users = dict(users or {})
        self.extra_config = list(extra_config)
        self.executable = executable
        self.start_timeout = start_timeout
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self._workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # ---- lifecycle

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def workdir(self) -> Path:
        """Where the config, the log, the password file and the persistence file go."""
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sensord-mosquitto-")
            self._workdir = Path(self._tmp.name)
        return self._workdir

    @property
    def log_path(self) -> Path:
        """Everything the broker logged, every run appended: for a post-mortem."""
        return self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and return once it listens; stopped again if it does not."""
        if self.proc is not None:
            return
        try:
            conf = self.workdir / "mosquitto.conf"
            if self.users and not (self.workdir / "passwd").exists():
                self._write_password_file(self.workdir / "passwd")
            conf.write_text(self.config(), encoding="utf-8")
            # a fixed program and a config we wrote: no shell, nothing from a user
            self.proc = subprocess.Popen(  # noqa: S603
                [self.executable, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._reader = threading.Thread(
                target=self._read_log, args=(self.proc,), name="mosquitto-log", daemon=True
            )
            self._reader.start()
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to our own process (by its PID), SIGKILL if it has not exited in 10 s."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(timeout=2.0)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def close(self) -> None:
        """Stop, and remove the temporary workdir if we made it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp, self._workdir = None, None

    # ---- the config

    def config(self) -> str:
        """The broker's config; every setting that shapes a test or a measurement is here."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            # the outgoing QoS 1 window per client; the stock 20 makes a drain wait on
            # round trips instead of on the receiver
            f"max_inflight_messages {self.max_inflight_messages}",
            # the log is how wait_subscribed() learns that a subscription is in place;
            # stderr, because stdout into a pipe is block-buffered and lines would come late
            "log_dest stderr",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "subscribe")),
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
        if os.geteuid() == 0:
            # as root Mosquitto drops to user mosquitto, who cannot read a private tmp dir
            lines.append("user root")
        if self.users:
            lines.append(f"password_file {self.workdir / 'passwd'}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        return "\n".join([*lines, *self.extra_config, ""])

    def _write_password_file(self, path: Path) -> None:
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for i, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if i == 0 else []
            # a fixed program; the names and passwords are the caller's test data
            subprocess.run(  # noqa: S603
                [passwd, "-b", *create, str(path), user, password],
                check=True,
                capture_output=True,
                timeout=30,
            )

    # ---- the log, and waiting on it

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with self.log_path.open("a", encoding="utf-8") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._changed.notify_all()

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=2.0)  # the last lines say why
                msg = f"mosquitto exited with {self.proc.returncode}: {self.log()}"
                raise BrokerError(msg)
            try:
                # a plain TCP connect, TLS listener or not: it listens, that is all we ask
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        msg = f"mosquitto did not listen on port {self.port} in {self.start_timeout}s"
        raise BrokerError(msg)

    def log(self, last: int = 20) -> str:
        """The broker's last log lines (every run since this object was made)."""
        with self._changed:
            return "\n".join(self._lines[-last:])

    def wait_subscribed(self, client_id: str, topic: str, timeout: float = 10.0) -> None:
        """Block until the broker has logged `client_id`'s subscription to `topic`."""
        pattern = re.compile(rf"(^|\s){re.escape(client_id)} [012] {re.escape(topic)}$")
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                if any(pattern.search(line) for line in self._lines[seen:]):
                    return
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"{client_id} did not subscribe to {topic} in {timeout}s"
                    raise BrokerError(msg)
                self._changed.wait(left)

    @cached_property
    def version(self) -> str:
        """The broker's version, as `mosquitto -h` prints it ("unknown" if it does not)."""
        out = subprocess.run(  # noqa: S603 - our own executable, fixed arguments
            [self.executable, "-h"], capture_output=True, text=True, timeout=5.0, check=False
        ).stdout
        m = re.search(r"mosquitto version (\S+)", out)
        return m.group(1) if m else "unknown"
