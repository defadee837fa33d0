"""`sensord readings tail`: print readings from the RabbitMQ stream `<prefix>.readings`
(with `[telemetry] partitions` N > 1: from the N streams `<prefix>.readings.<i>` at once,
or the ones `--partition` names).

A plain AMQP 0.9.1 stream consumer (docs/telemetry.md): `basic.qos` set, one consumer per
stream on one channel with the consumer argument `x-stream-offset` from `--from` (`first`,
`last`, `next`, an offset, or a duration back from now: a timestamp), each message
acknowledged (a stream needs it to grant more credit; nothing is removed). The streams'
messages are printed as they arrive: in order per stream, so per sensor, not across
partitions. One line per reading:

    2026-12-03T11:40:00.125Z plant-1/t-7 temperature 21.5 Cel

or, with `--json`, one JSON object per reading with its message's partition, stream
offset and message id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sensord.errors import ConfigError, SensordError
from sensord.ops.config import default_config_path, load_settings
from sensord.ops.settings import parse_duration
from sensord.telemetry.partition import stream_names
from sensord.telemetry.senml import StreamReading, decode

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

PREFETCH = 200
NAMED_OFFSETS = ("first", "last", "next")


def add_arguments(sub: Any) -> None:
    readings = sub.add_parser("readings", help="readings from the RabbitMQ readings stream")
    readings_sub = readings.add_subparsers(dest="readings_command", required=True, metavar="ACTION")
    tail = readings_sub.add_parser(
        "tail", help="print readings from the stream (docs/telemetry.md)"
    )
    tail.add_argument("-c", "--config", type=Path, help="[amqp] url and prefix from this config")
    tail.add_argument(
        "--from",
        dest="start",
        default="next",
        help="first | last | next (default) | an offset | a duration back from now (10m, 2h)",
    )
    tail.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="LABEL=GLOB",
        help="only readings whose label matches (site, device, kind, unit, any label); repeatable",
    )
    tail.add_argument(
        "--partition",
        action="append",
        type=int,
        default=[],
        metavar="I",
        help="only partition I's stream ([telemetry] partitions > 1); repeatable. Default: all",
    )
    tail.add_argument("--count", type=int, help="exit after this many readings")
    tail.add_argument("--idle", type=float, help="exit after this many seconds without a reading")
    tail.add_argument("--json", action="store_true", help="one JSON object per reading")


def parse_offset(text: str, now: float | None = None) -> str | int | datetime:
    """`--from` -> the x-stream-offset argument: a name, an offset or a timestamp."""
    if text in NAMED_OFFSETS:
        return text
    if text.isdigit():
        return int(text)
    try:
        back = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"--from: {text!r} is not first, last, next, an offset or a duration like 10m"
        ) from None
    t = (time.time() if now is None else now) - back
    return datetime.fromtimestamp(int(t), UTC)


def select_streams(
    prefix: str, partitions: int, chosen: list[int], offset: str | int | datetime
) -> dict[int, str]:
    """partition -> stream to read: all of them, or the `--partition` ones. A numeric
    offset is a position in one stream: refused when more than one is read."""
    names = stream_names(prefix, partitions)
    for i in chosen:
        if not 0 <= i < partitions:
            raise ValueError(
                f"--partition {i}: [telemetry] partitions is {partitions}, "
                f"so a partition is 0 to {partitions - 1}"
            )
    streams = {i: names[i] for i in sorted(set(chosen))} if chosen else dict(enumerate(names))
    if isinstance(offset, int) and len(streams) > 1:
        raise ValueError(
            f"--from {offset}: an offset is a position in one stream, and {len(streams)} "
            "are read; choose one with --partition I, or use first, last, next or a "
            "duration (10m)"
        )
    return streams


def parse_matchers(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        label, sep, glob = item.partition("=")
        if not sep or not label:
            raise ValueError(f"--match: {item!r} is not LABEL=GLOB")
        out.append((label, glob))
    return out


def matches(r: StreamReading, matchers: list[tuple[str, str]]) -> bool:
    fields = {"site": r.site, "device": r.device, "kind": r.kind, "unit": r.unit or ""}
    for label, glob in matchers:
        value = fields.get(label, r.labels.get(label))
        if value is None or not fnmatch.fnmatchcase(value, glob):
            return False
    return True


def _print(
    msg: AbstractIncomingMessage,
    matchers: list[tuple[str, str]],
    as_json: bool,
    out: TextIO,
    limit: int | None,
    *,
    partition: int,
) -> int:
    """The message's matching readings, at most `limit`; how many were printed."""
    stream_offset = (msg.headers or {}).get("x-stream-offset")
    try:
        readings = decode(msg.body)
    except ValueError as exc:
        print(
            f"skipping message at offset {stream_offset!r} of partition {partition}: {exc}",
            file=sys.stderr,
        )
        return 0
    printed = 0
    for r in readings:
        if limit is not None and printed >= limit:
            break
        if not matches(r, matchers):
            continue
        if as_json:
            rec = {
                **r.as_dict(),
                "partition": partition,
                "offset": stream_offset,
                "message_id": msg.message_id,
            }
            out.write(json.dumps(rec) + "\n")
        else:
            out.write(line(r) + "\n")
        printed += 1
    out.flush()
    return printed


def line(r: StreamReading) -> str:
    when = datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="milliseconds")
    text = f"{when.replace('+00:00', 'Z')} {r.site}/{r.device} {r.kind} {r.value:.15g}"
    return f"{text} {r.unit}" if r.unit else text


async def _connect(aio_pika: Any, urls: list[str]) -> Any:
    """The first of the cluster's nodes that answers."""
    for i, url in enumerate(urls):
        try:
            return await aio_pika.connect(url)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
            if i == len(urls) - 1:
                raise
    raise ValueError("no [amqp] url")


class StreamNotFoundError(SensordError):
    """A stream to read does not exist (no edge publishes to it, or other partitions)."""

    def __init__(self, queue: str) -> None:
        super().__init__(queue)
        self.queue = queue


async def tail(
    url: str | list[str],
    queues: str | dict[int, str],
    offset: str | int | datetime,
    matchers: list[tuple[str, str]],
    *,
    count: int | None = None,
    idle: float | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Print readings from the streams (one name: partition 0; or partition -> name)
    until `count` were printed or none came for `idle` seconds."""
    import aio_pika  # noqa: PLC0415 - the verb's own dependency, not the CLI's

    streams = {0: queues} if isinstance(queues, str) else queues
    printed = 0
    connection = await _connect(aio_pika, [url] if isinstance(url, str) else url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)  # a stream consumer needs a prefetch
        found = []
        for partition, queue in streams.items():
            try:
                found.append((partition, await channel.declare_queue(queue, passive=True)))
            except aio_pika.exceptions.ChannelNotFoundEntity:
                raise StreamNotFoundError(queue) from None
        # consume into a queue of ours rather than through aio-pika's QueueIterator, which
        # nacks what it prefetched when it closes: a stream answers a nack by closing the
        # connection (NOT_IMPLEMENTED); unacked deliveries are simply released on close.
        # One consumer per stream, the partition told by the consumer tag
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tags: dict[str, int] = {}
        consumers = []
        for partition, q in found:
            tag = await q.consume(inbox.put, arguments={"x-stream-offset": offset})
            tags[tag] = partition
            consumers.append((q, tag))
        try:
            while count is None or printed < count:
                try:
                    msg = await asyncio.wait_for(inbox.get(), idle)
                except TimeoutError:
                    break
                printed += _print(
                    msg,
                    matchers,
                    as_json,
                    out,
                    None if count is None else count - printed,
                    partition=tags.get(msg.consumer_tag or "", 0),
                )
                await msg.ack()
        finally:
            for q, tag in consumers:
                with contextlib.suppress(Exception):
                    await q.cancel(tag)
    return printed


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config if args.config is not None else default_config_path())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        offset = parse_offset(args.start)
        matchers = parse_matchers(args.match)
        streams = select_streams(
            settings.amqp.prefix, settings.telemetry.partitions, args.partition, offset
        )
    except ValueError as exc:
        print(f"sensord readings tail: {exc}", file=sys.stderr)
        return 2
    import aio_pika  # noqa: PLC0415 - the verb's own dependency, not the CLI's

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                tail(
                    settings.amqp.urls,
                    streams,
                    offset,
                    matchers,
                    count=args.count,
                    idle=args.idle,
                    as_json=args.json,
                )
            )
    except StreamNotFoundError as exc:
        also = (
            ""
            if settings.telemetry.partitions == 1
            else f", with partitions = {settings.telemetry.partitions} as on the edges"
        )
        print(
            f"sensord readings tail: no stream {exc.queue}: is [telemetry] stream = true{also}?",
            file=sys.stderr,
        )
        return 1
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(f"sensord readings tail: RabbitMQ: {exc}", file=sys.stderr)
        return 1
    return 0
