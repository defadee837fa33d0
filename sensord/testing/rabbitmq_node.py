"""The pieces of a local RabbitMQ cluster below the cluster itself (sensord.testing.rabbitmq):
where the installed server's own scripts are, one node's names and ports, the state file's
model, and the probes of a process and a port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sensord.errors import SensordError

# the server's own scripts (not the root-to-rabbitmq wrappers in /usr/sbin)
SBIN_GLOB = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"
EPMD = shutil.which("epmd", path="/usr/bin:/usr/lib/erlang/bin") or "/usr/bin/epmd"
STATE_FILE = "cluster.json"
HOST = "127.0.0.1"


class ClusterError(SensordError):
    """The cluster could not be started, joined or asked in time."""


def rabbitmq_sbin() -> Path | None:
    """The installed server's own `sbin/` (the newest version), or None."""
    found = sorted(Path("/").glob(SBIN_GLOB.lstrip("/")))
    for sbin in reversed(found):
        if (sbin / "rabbitmq-server").is_file() and (sbin / "rabbitmqctl").is_file():
            return sbin
    return None


def missing() -> str | None:
    """Why a cluster cannot run here (for a test's skip), or None."""
    if rabbitmq_sbin() is None:
        return f"rabbitmq-server is not installed (no {SBIN_GLOB}/rabbitmq-server)"
    if not Path(EPMD).is_file():
        return f"epmd (Erlang) is not installed ({EPMD})"
    return None


@dataclass
class RabbitNode:
    """One node: its name, ports and directories; `pid` while it runs."""

    index: int
    name: str  # e.g. sensord-rmq-1@localhost
    amqp_port: int
    dist_port: int
    tls_port: int | None
    dir: str
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}/"

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else f"amqps://guest:guest@localhost:{self.tls_port}/"


@dataclass
class ClusterState:
    workdir: str
    cookie: str
    epmd_port: int
    epmd_pid: int | None
    ctl_dist_min: int
    ctl_dist_max: int
    nodes: list[RabbitNode] = field(default_factory=list)
    remove_workdir: bool = False


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def amqp_answers(port: int) -> bool:
    """The AMQP listener speaks: the protocol header gets connection.start back."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1)[:1] == b"\x01"  # a method frame
    except OSError:
        return False


def reap(pid: int, timeout: float, procs: dict[int, subprocess.Popen[bytes]]) -> bool:
    """Wait up to `timeout` for `pid` to end (reaped through its Popen when this process
    started it, in `procs`); False if it still runs."""
    proc = procs.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
            return True
        procs[pid] = proc
        return False
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pids: list[int], timeout: float, procs: dict[int, subprocess.Popen[bytes]]) -> None:
    """SIGTERM all at once (a clean stop of one node waits on its peers otherwise), then
    SIGKILL each that is still there after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        if not reap(pid, timeout, procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid, 5.0, procs)
