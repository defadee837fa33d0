"""A local RabbitMQ cluster of your own: N nodes of the installed server, joined, always stopped.

Never the machine's own node: each node has its own name (`<name>-<i>@localhost`), AMQP
port, distribution port, data and log directories and config files (so that nothing of
/etc/rabbitmq applies), all nodes share one cookie, and they register with a private
`epmd` on a port of their own. As root, /usr/sbin/rabbitmq-server and rabbitmqctl are
wrappers that re-run as user rabbitmq with its HOME and cookie: the server's own scripts in
its `sbin/` are called instead (FACTS.md, "A local RabbitMQ cluster").

Every process is started here and stopped here by its PID (`RUNNING_UNDER_SYSTEMD=true`
makes the start script exec erl, so a node's PID is the beam's). The state (names, ports,
PIDs) is written to `<workdir>/cluster.json`, so that `python -m sensord.testing.rabbitmq
stop` (scripts/rabbitmq-cluster.sh) stops a cluster another process started.

    with RabbitCluster(3) as cluster:
        urls = cluster.urls                   # one amqp:// URL per node
        node = cluster.leader("my.queue")     # the node leading a quorum queue
        cluster.kill(node)                    # SIGKILL
        cluster.restart(node)                 # back, rejoins by itself
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sensord.testing.ports import free_port
from sensord.testing.rabbitmq_node import (
    EPMD,
    HOST,
    STATE_FILE,
    ClusterError,
    ClusterState,
    RabbitNode,
    alive,
    amqp_answers,
    missing,
    port_open,
    rabbitmq_sbin,
    reap,
    terminate,
)
from sensord.testing.tls import TlsFiles

__all__ = ["ClusterError", "RabbitCluster", "RabbitNode", "missing", "rabbitmq_sbin"]


class RabbitCluster:
    """`with RabbitCluster(3) as cluster:` N joined nodes on free ports, stopped on any exit.

    `tls`: a TLS listener on each node too (`node.tls_port`, `node.tls_url`), from a
    throw-away PKI (sensord.testing.make_tls_files). `base_port`: node i listens on
    base_port + i (and its distribution on base_port + 20000 + i) instead of free ports,
    so that a user's cluster has ports to write in a config.
    """

    def __init__(
        self,
        nodes: int = 3,
        workdir: Path | None = None,
        *,
        name: str = "sensord-rmq",
        base_port: int | None = None,
        tls: TlsFiles | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        sbin = rabbitmq_sbin()
        if sbin is None:
            raise ClusterError(missing() or "rabbitmq-server is not installed")
        self.sbin = sbin
        self.size = nodes
        self.name = name
        self.base_port = base_port
        self.tls = tls
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix=name + "-"))
        self._state: ClusterState | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- state ---------------------------------------------------------------------------

    @property
    def nodes(self) -> list[RabbitNode]:
        return [] if self._state is None else self._state.nodes

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, ref: RabbitNode | str | int) -> RabbitNode:
        """A node by itself, its name (with or without `@localhost`) or its index."""
        if isinstance(ref, RabbitNode):
            return ref
        for n in self.nodes:
            if ref in (n.index, n.name, n.name.partition("@")[0]):
                return n
        raise KeyError(f"no node {ref!r} in this cluster")

    def node_by_port(self, port: int) -> RabbitNode:
        for n in self.nodes:
            if port in (n.amqp_port, n.tls_port):
                return n
        raise KeyError(f"no node listens on {port}")

    def _save(self) -> None:
        assert self._state is not None
        data = asdict(self._state)
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(self.workdir / STATE_FILE)

    @classmethod
    def attach(cls, workdir: Path) -> RabbitCluster:
        """The cluster whose state is in `workdir` (started by another process)."""
        data = json.loads((workdir / STATE_FILE).read_text(encoding="utf-8"))
        cluster = cls.__new__(cls)
        sbin = rabbitmq_sbin()
        if sbin is None:
            raise ClusterError(missing() or "rabbitmq-server is not installed")
        cluster.sbin = sbin
        nodes = [RabbitNode(**n) for n in data.pop("nodes")]
        cluster._state = ClusterState(**data, nodes=nodes)
        cluster.size = len(nodes)
        cluster.name = nodes[0].name.partition("@")[0].rpartition("-")[0] if nodes else ""
        cluster.base_port = None
        cluster.tls = None
        cluster.start_timeout = 60.0
        cluster._own_workdir = cluster._state.remove_workdir
        cluster.workdir = workdir
        cluster._procs = {}
        return cluster

    # -- environment ---------------------------------------------------------------------

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        st = self._state
        assert st is not None
        home = self.workdir / "home"
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(st.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CTL_ERL_ARGS": f"-setcookie {st.cookie}",
            "RABBITMQ_CTL_DIST_PORT_MIN": str(st.ctl_dist_min),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(st.ctl_dist_max),
        }
        if node is not None:
            d = Path(node.dir)
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": HOST,
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_MNESIA_DIR": str(d / "mnesia" / node.name),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_CONFIG_FILES": str(d / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    f"-setcookie {st.cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"
                ),
                # exec erl: the child's PID is the node's (stopped by that PID)
                "RUNNING_UNDER_SYSTEMD": "true",
            }
        return env

    def _write_node_files(self, node: RabbitNode) -> None:
        d = Path(node.dir)
        for sub in ("mnesia", "log", "conf.d", "plugins-expand"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        (d / "advanced.config").write_text("[].\n", encoding="utf-8")
        lines = [
            f"listeners.tcp.default = {HOST}:{node.amqp_port}",
            "loopback_users.guest = true",
            "log.console = false",
            "log.file.level = info",
            # a laptop's disk often has less than the stock 50 MB free... it rarely does,
            # but a test must not block on an alarm it did not cause
            "disk_free_limit.absolute = 10MB",
            "vm_memory_high_watermark.relative = 0.8",
        ]
        if self.tls is not None and node.tls_port is not None:
            lines += [
                f"listeners.ssl.default = {HOST}:{node.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca}",
                f"ssl_options.certfile = {self.tls.server_cert}",
                f"ssl_options.keyfile = {self.tls.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (d / "rabbitmq.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- commands ------------------------------------------------------------------------

    def ctl(
        self, node: RabbitNode | str | int, *args: str, timeout: float = 60.0, tool: str = ""
    ) -> str:
        """Run `rabbitmqctl -n NODE ARGS…` (or another CLI tool: `rabbitmq-queues`)."""
        n = self.node(node)
        exe = self.sbin / (tool or "rabbitmqctl")
        try:
            out = subprocess.run(  # noqa: S603 - our own program and arguments
                [str(exe), "-n", n.name, *args],
                env=self._env(),
                capture_output=True,
                timeout=timeout,
                check=False,
                cwd=self.workdir,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{exe.name} {' '.join(args)} on {n.name}: no answer") from None
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).decode(errors="replace").strip()
            raise ClusterError(f"{exe.name} {' '.join(args)} on {n.name}: {detail[-800:]}")
        return out.stdout.decode(errors="replace")

    def _start_epmd(self) -> None:
        st = self._state
        assert st is not None
        env = self._env()
        log = (self.workdir / "epmd.log").open("ab")
        with log:
            proc = subprocess.Popen(  # noqa: S603 - the installed epmd
                [EPMD, "-port", str(st.epmd_port), "-address", HOST],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        st.epmd_pid = proc.pid
        self._procs[proc.pid] = proc
        self._save()
        deadline = time.monotonic() + 10
        while not port_open(st.epmd_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"epmd on port {st.epmd_port} did not start")
            time.sleep(0.02)

    def _spawn(self, node: RabbitNode) -> None:
        d = Path(node.dir)
        with (d / "log" / "startup.log").open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - the server's own script
                [str(self.sbin / "rabbitmq-server")],
                env=self._env(node),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=d,
                start_new_session=True,  # Ctrl-C in the user's terminal leaves it running
            )
        node.pid = proc.pid
        self._procs[proc.pid] = proc
        self._save()

    def _wait_up(self, node: RabbitNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not amqp_answers(node.amqp_port):
            if not alive(node.pid):
                raise ClusterError(f"{node.name} exited while starting: {self._log_tail(node)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name} not up after {timeout:g}s: {self._log_tail(node)}")
            time.sleep(0.1)

    def _log_tail(self, node: RabbitNode) -> str:
        d = Path(node.dir) / "log"
        texts = []
        for f in sorted(d.glob("*.log")):
            with contextlib.suppress(OSError):
                texts.append(f"{f.name}: " + f.read_text(errors="replace")[-600:])
        return " | ".join(texts) or "(no log)"

    def start(self) -> Self:
        """Start every node (in parallel), join them to the first, wait until clustered."""
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        (self.workdir / "rabbitmq-env.conf").write_text("# sensord test cluster\n")
        ports = self._ports()
        ctl_min = ports["ctl"]
        self._state = ClusterState(
            workdir=str(self.workdir),
            cookie=secrets.token_hex(16).upper(),
            epmd_port=ports["epmd"],
            epmd_pid=None,
            ctl_dist_min=ctl_min,
            ctl_dist_max=ctl_min + 99,
            remove_workdir=self._own_workdir,
        )
        for i in range(1, self.size + 1):
            amqp, dist, tls = ports["nodes"][i - 1]
            node = RabbitNode(
                index=i,
                name=f"{self.name}-{i}@localhost",
                amqp_port=amqp,
                dist_port=dist,
                tls_port=tls if self.tls is not None else None,
                dir=str(self.workdir / f"node{i}"),
            )
            self._state.nodes.append(node)
            self._write_node_files(node)
        self._save()
        try:
            self._start_epmd()
            for node in self.nodes:
                self._spawn(node)
            left = self.start_timeout - (time.monotonic() - began)
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                for f in [pool.submit(self._wait_up, n, left) for n in self.nodes]:
                    f.result()
            seed = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", seed.name)
                self.ctl(node, "start_app")
            self.wait_clustered(max(self.start_timeout - (time.monotonic() - began), 5.0))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _ports(self) -> dict[str, Any]:
        if self.base_port is None:
            nodes = [(free_port(), free_port(), free_port()) for _ in range(self.size)]
            # the CLI's own distribution ports: a range away from the nodes' (FACTS.md)
            ctl = 21000 + (os.getpid() % 80) * 100
            return {"epmd": free_port(), "ctl": ctl, "nodes": nodes}
        b = self.base_port
        nodes = [(b + i, b + 20000 + i, b + 100 + i) for i in range(1, self.size + 1)]
        return {"epmd": b + 20000, "ctl": b + 20100, "nodes": nodes}

    def running_nodes(self, via: RabbitNode | str | int | None = None) -> list[str]:
        """The nodes a running node sees in its cluster (`cluster_status`)."""
        ask = self.node(via) if via is not None else next(n for n in self.nodes if alive(n.pid))
        data = json.loads(self.ctl(ask, "cluster_status", "--formatter", "json"))
        return sorted(data.get("running_nodes", []))

    def wait_clustered(self, timeout: float = 30.0, size: int | None = None) -> None:
        """Until every node (or `size` of them) runs in one cluster."""
        want = self.size if size is None else size
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterError, ValueError, StopIteration):
                seen = self.running_nodes()
                if len(seen) >= want:
                    return
            time.sleep(0.5)
        raise ClusterError(f"cluster not formed after {timeout:g}s: running {seen}")

    def kill(self, node: RabbitNode | str | int) -> RabbitNode:
        """SIGKILL the node's beam: a crash, no goodbye to its peers or clients."""
        n = self.node(node)
        if n.pid is not None and alive(n.pid):
            os.kill(n.pid, signal.SIGKILL)
            reap(n.pid, 10.0, self._procs)
        n.pid = None
        self._save()
        return n

    def restart(self, node: RabbitNode | str | int, timeout: float = 60.0) -> RabbitNode:
        """Start a stopped or killed node again (stopping it first if it runs); it rejoins."""
        n = self.node(node)
        if n.pid is not None and alive(n.pid):
            terminate([n.pid], 30.0, self._procs)
            n.pid = None
        self._spawn(n)
        self._wait_up(n, timeout)
        return n

    def stop_node(self, node: RabbitNode | str | int, timeout: float = 30.0) -> RabbitNode:
        """A clean stop (SIGTERM: the node leaves its queues' leadership first)."""
        n = self.node(node)
        if n.pid is not None and alive(n.pid):
            terminate([n.pid], timeout, self._procs)
        n.pid = None
        self._save()
        return n

    def leader(self, queue: str, vhost: str = "/") -> RabbitNode:
        """The node that leads quorum queue `queue` now."""
        last = ""
        for ask in [n for n in self.nodes if alive(n.pid)]:
            try:
                out = self.ctl(
                    ask, "list_queues", "-p", vhost, "name", "leader", "--formatter", "json"
                )
            except ClusterError as exc:
                last = str(exc)
                continue
            for row in json.loads(out):
                if row.get("name") == queue and row.get("leader"):
                    return self.node(str(row["leader"]))
            last = f"no quorum queue {queue!r} with a leader"
        raise ClusterError(f"leader of {queue!r}: {last or 'no node runs'}")

    def status(self) -> dict[str, Any]:
        """What `rabbitmq-cluster.sh status` prints: nodes, ports, PIDs, who runs."""
        running: list[str] = []
        with contextlib.suppress(ClusterError, ValueError, StopIteration):
            running = self.running_nodes()
        return {
            "workdir": str(self.workdir),
            "urls": self.urls,
            "nodes": [
                {
                    "name": n.name,
                    "url": n.url,
                    "tls_url": n.tls_url,
                    "pid": n.pid if alive(n.pid) else None,
                    "clustered": n.name in running,
                }
                for n in self.nodes
            ],
        }

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process this cluster started (by PID), then remove its files."""
        st = self._state
        if st is None:
            return
        # all nodes at once: a clean stop of one waits on its peers otherwise
        pids = [n.pid for n in st.nodes if n.pid is not None and alive(n.pid)]
        terminate(pids, 15.0, self._procs)
        for n in st.nodes:
            n.pid = None
        if st.epmd_pid is not None and alive(st.epmd_pid):
            terminate([st.epmd_pid], 5.0, self._procs)
        st.epmd_pid = None
        self._state = None
        if st.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        # a given directory keeps what the caller put there (tls/): the nodes' data goes,
        # so that the next start is a fresh cluster
        for n in st.nodes:
            shutil.rmtree(n.dir, ignore_errors=True)
        shutil.rmtree(self.workdir / "home", ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.workdir / STATE_FILE).unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # python -m sensord.testing.rabbitmq: scripts/rabbitmq-cluster.sh
    from sensord.testing.rabbitmq_cli import main

    sys.exit(main())
