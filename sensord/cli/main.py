"""Command line: `sensord run`, `sensord check`, `sensord rules test` (ARCHITECTURE.md "CLI")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import cast

from sensord import __version__
from sensord.cli import client, readings
from sensord.errors import ConfigError, SensordError
from sensord.ops.config import Settings, default_config_path, load_settings
from sensord.ops.logs import setup_logging
from sensord.rules import Rule, load_rules

log = logging.getLogger("sensord")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensord", description="IoT sensor telemetry and alerting daemon"
    )
    parser.add_argument("--version", action="version", version=f"sensord {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "-c",
        "--config",
        type=Path,
        help="config file (default: $SENSORD_CONFIG, "
        "else /etc/sensord/sensord.toml, else ./sensord.toml)",
    )
    run.add_argument(
        "--role",
        choices=("all", "edge", "notify", "rules"),
        default="all",
        help="edge: MQTT->rules->RabbitMQ; notify: RabbitMQ->channels; all: both; "
        "rules: the readings stream->rules->RabbitMQ (central rules, docs/central.md)",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument(
        "--log-format",
        default="auto",
        choices=("auto", "json", "text"),
        help="auto: text on a terminal, JSON lines otherwise (journald, files, pipes)",
    )
    check = sub.add_parser("check", help="validate the config and every rule file")
    check.add_argument("-c", "--config", type=Path)
    status = sub.add_parser(
        "status",
        help="summary of a running sensord; exit 0 ready, 1 degraded, 2 not ready/unreachable",
    )
    status.add_argument("-c", "--config", type=Path, help="read [http] listen from this config")
    status.add_argument("--url", help="sensord's HTTP base URL (default: from the config)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    sources = sub.add_parser(
        "sources", help="a running sensord's sources: formats, counters, discovered devices"
    )
    sources.add_argument("-c", "--config", type=Path, help="read [http] listen from this config")
    sources.add_argument("--url", help="sensord's HTTP base URL (default: from the config)")
    sources.add_argument("--json", action="store_true", help="print the raw JSON")
    client.add_arguments(sub)
    readings.add_arguments(sub)
    docs = sub.add_parser("docs", help="generate documentation")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True, metavar="WHAT")
    asyncapi = docs_sub.add_parser("asyncapi", help="AsyncAPI 3.0 document of the AMQP interface")
    asyncapi.add_argument("-c", "--config", type=Path)
    asyncapi.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    dlq = sub.add_parser("dlq", help="list, replay or purge dead-lettered notifications")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="table of dead letters")
    dlq_replay = dlq_sub.add_parser("replay", help="back into the channel queue, attempts reset")
    dlq_purge = dlq_sub.add_parser("purge", help="delete a channel's dead letters")
    for p in (dlq_list, dlq_replay, dlq_purge):
        p.add_argument("-c", "--config", type=Path)
    dlq_list.add_argument("--channel", help="only this channel")
    dlq_replay.add_argument("--channel", help="only this channel")
    which = dlq_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the event id of one dead letter (see `dlq list`)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    dlq_purge.add_argument("--channel", required=True)
    dlq_purge.add_argument("--yes", action="store_true", help="confirm: messages are lost")
    rules = sub.add_parser("rules", help="rule tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    test = rules_sub.add_parser(
        "test", help="run rule unit tests: input series -> expected alerts (docs/rules.md)"
    )
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    return parser


def load_all(config: Path | None) -> tuple[Path, Settings, list[Rule]]:
    path = config if config is not None else default_config_path()
    settings = load_settings(path)
    rules = load_rules(settings.rules.paths, settings.base_dir)
    return path, settings, rules


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        path, settings, rules = load_all(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    print(f"{path}: ok ({len(rules)} rule(s), {len(settings.channels)} channel(s))")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    try:
        path, settings, rules = load_all(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    log.info("config %s, %d rule(s)", path, len(rules))
    from sensord.app import Role, Service  # noqa: PLC0415 - keep `check` light
    from sensord.ops import gc  # noqa: PLC0415 - only the daemon tunes the collector

    gc.tune()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = Service(settings, rules, cast(Role, args.role))
        loop.add_signal_handler(signal.SIGHUP, service.reload)  # like POST /-/reload
        await service.run(stop)

    try:
        asyncio.run(main())
    except SensordError as exc:  # a fatal condition sensord explains itself, not a crash
        log.error("%s", exc)
        print(f"sensord: {exc}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`status` and `sources`: both read a running sensord's HTTP API."""
    from sensord.cli import status  # noqa: PLC0415 - only these verbs need it

    url = args.url
    if url is None:
        try:
            settings = load_settings(args.config or default_config_path())
        except ConfigError as exc:
            _print_problems(exc)
            return status.EXIT_NOT_READY
        if not settings.http.listen:
            print(
                f"{args.command}: [http] listen is disabled in the config; pass --url",
                file=sys.stderr,
            )
            return status.EXIT_NOT_READY
        url = f"http://{settings.http.listen}"
    sources = args.command == "sources"
    try:
        st = status.get(url, "/api/v1/sources" if sources else "/api/v1/status")
    except status.StatusUnavailableError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return status.EXIT_NOT_READY
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print(status.render_sources(st) if sources else status.render_status(st))
    return status.EXIT_READY if sources else status.exit_code(st)


def cmd_docs(args: argparse.Namespace) -> int:
    from sensord.amqp.asyncapi import render  # noqa: PLC0415 - only this verb needs it

    try:
        settings = load_settings(args.config or default_config_path())
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    text = render(settings)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from sensord.amqp import dlq  # noqa: PLC0415 - keep `check` light

    try:
        settings = load_settings(args.config if args.config is not None else default_config_path())
        channels = dlq.select_channels(list(settings.channels), args.channel)
        if args.dlq_command == "list":
            letters = asyncio.run(dlq.list_dead(settings.amqp, channels))
            print(dlq.table(letters))
            print(f"{len(letters)} dead letter(s)")
        elif args.dlq_command == "replay":
            done = asyncio.run(dlq.replay(settings.amqp, channels, args.id))
            for d in done:
                print(f"replayed {d.event_id} to {settings.amqp.notify_queue(d.channel)}")
            print(f"{len(done)} replayed")
        else:
            if not args.yes:
                print(
                    f"purge deletes every dead letter of channel {args.channel}: "
                    "add --yes to confirm",
                    file=sys.stderr,
                )
                return 1
            count = asyncio.run(dlq.purge(settings.amqp, channels[0]))
            print(f"purged {count} dead letter(s) of channel {args.channel}")
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    except dlq.DlqError as exc:
        print(f"sensord dlq: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args)
    if args.command in ("status", "sources"):
        return cmd_status(args)
    if args.command == "docs":
        return cmd_docs(args)
    if args.command in ("alerts", "silences"):
        return client.run(args)
    if args.command == "dlq":
        return cmd_dlq(args)
    if args.command == "readings":
        return readings.run(args)
    if args.command == "rules":
        from sensord.rules.testing import main as rules_test  # noqa: PLC0415 - keep startup light

        return rules_test(args.files, sys.stdout, sys.stderr)
    return cmd_run(args)
