"""systemd integration: sd_notify over a real datagram socket, the unit file, the installer."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensord.ops.systemd import SystemdNotifier
from tests.support import HOT_RULE, SensordProcess, running, uid, wait_for

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze (Debian package systemd) is not installed"
)

RULES = HOT_RULE


class NotifySocket:
    """Stands in for systemd: a datagram socket that collects sd_notify messages."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def fields(self) -> list[str]:
        return [f for m in self.drain() for f in m.split("\n")]

    async def wait_field(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for field in self.fields():
                if field.startswith(prefix):
                    return field
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {prefix!r} in {self.messages}")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = str(tmp_path / "notify.sock")
    ns = NotifySocket(path)
    yield path, ns
    ns.sock.close()


def test_notifier_sends_to_a_path_socket(notify_socket: tuple[str, NotifySocket]) -> None:
    path, ns = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("all good")
    assert notifier.watchdog()
    assert ns.drain() == ["READY=1\nSTATUS=all good", "WATCHDOG=1"]
    notifier.close()


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"sensord-test-{uid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping()
        assert sock.recv(100) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()
    finally:
        sock.close()


def test_notifier_outside_systemd_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], interval: float | None
) -> None:
    assert SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == interval


def test_notify_to_a_missing_socket_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    notifier.close()
    assert len([r for r in caplog.records if "sd_notify" in r.message]) == 1


@pytest.mark.e2e
async def test_sensord_tells_systemd_ready_pings_watchdog_and_stops(
    sensord: SensordProcess, notify_socket: tuple[str, NotifySocket]
) -> None:
    path, ns = notify_socket
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "console", "type": "console"}]
    sensord.extra_env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    async with running(sensord):
        await ns.wait_field("READY=1")
        ready_msg = next(m for m in ns.messages if "READY=1" in m)
        assert "MQTT connected" in ready_msg
        assert sensord.proc is not None
        sensord.proc.send_signal(signal.SIGHUP)  # reload the rules
        reloading = await ns.wait_field("RELOADING=1")
        assert reloading == "RELOADING=1"
        assert any(f.startswith("MONOTONIC_USEC=") for f in ns.fields())
        await wait_for(lambda: sum("READY=1" in m for m in ns.messages) >= 2)
        before = ns.fields().count("WATCHDOG=1")
        await asyncio.sleep(1.6)  # pings every 0.5 s
        assert ns.fields().count("WATCHDOG=1") - before >= 2
        assert await sensord.stop() == 0
    assert "STOPPING=1" in ns.fields()


@pytest.mark.e2e
async def test_ready_while_rabbitmq_is_down_says_so(
    sensord: SensordProcess, notify_socket: tuple[str, NotifySocket]
) -> None:
    path, ns = notify_socket
    sensord.amqp_through_proxy()  # never opened: RabbitMQ unreachable
    sensord.rules_yaml = RULES
    sensord.extra_env = {"NOTIFY_SOCKET": path}
    async with running(sensord, ready=False):
        await ns.wait_field("READY=1")
        statuses = [f for f in ns.fields() if f.startswith("STATUS=")]
        assert any("RabbitMQ unreachable" in s for s in statuses), statuses
        assert await sensord.stop() == 0


def _render_unit(prefix: Path, sysconfdir: Path) -> str:
    text = (ROOT / "systemd" / "sensord.service").read_text()
    return text.replace("@PREFIX@", str(prefix)).replace("@SYSCONFDIR@", str(sysconfdir))


@needs_systemd_analyze
def test_unit_is_rated_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    unit = tmp_path / "sensord.service"
    unit.write_text(_render_unit(Path("/opt/sensord"), Path("/etc")))
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=15", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for sensord.service" in result.stdout


@needs_systemd_analyze
def test_unit_verifies_with_real_paths(tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "venv").symlink_to(Path(sys.executable).parent.parent)  # holds bin/sensord
    unit = tmp_path / "sensord.service"
    unit.write_text(_render_unit(prefix, tmp_path / "etc"))
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [ln for ln in result.stderr.splitlines() if "sensord.service" in ln]
    assert result.returncode == 0, result.stderr
    assert problems == []
