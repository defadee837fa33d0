"""`python -m sensord.testing.rabbitmq start|stop|status` (scripts/rabbitmq-cluster.sh):
a local RabbitMQ cluster for trying sensord's scale-out on one machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sensord.testing.rabbitmq import RabbitCluster
from sensord.testing.rabbitmq_node import STATE_FILE, missing

DEFAULT_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "sensord-rabbitmq-cluster"  # noqa: S108


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sensord.testing.rabbitmq",
        description="A local RabbitMQ cluster for trying sensord's scale-out on one machine.",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state and data directory")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--base-port", type=int, default=5680, help="node i listens on BASE+i (default 5680)"
    )
    parser.add_argument("--tls", action="store_true", help="also a TLS listener (throw-away CA)")
    args = parser.parse_args(argv)
    state = args.dir / STATE_FILE
    if args.command == "start":
        if state.exists():
            print(f"a cluster is running from {args.dir}: stop it first", file=sys.stderr)
            return 1
        if (why := missing()) is not None:
            print(why, file=sys.stderr)
            return 1
        args.dir.mkdir(parents=True, exist_ok=True)
        tls = None
        if args.tls:
            from sensord.testing.tls import make_tls_files  # noqa: PLC0415

            (args.dir / "tls").mkdir(exist_ok=True)
            tls = make_tls_files(args.dir / "tls")
        cluster = RabbitCluster(args.nodes, args.dir, base_port=args.base_port, tls=tls)
        cluster.start()
        print(json.dumps({**cluster.status(), "started_in_s": round(cluster.started_in, 1)}))
        print("sensord: [amqp] url = " + json.dumps(cluster.urls), file=sys.stderr)
        return 0
    if not state.exists():
        print(f"no cluster in {args.dir}", file=sys.stderr)
        return 0 if args.command == "stop" else 3
    cluster = RabbitCluster.attach(args.dir)
    if args.command == "stop":
        cluster.stop()
        print(f"stopped the cluster in {args.dir}", file=sys.stderr)
        return 0
    print(json.dumps(cluster.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
