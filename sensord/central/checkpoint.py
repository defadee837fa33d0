"""A partition's checkpoint: where its stream was read up to, and its alert state.

The owner of a partition publishes its checkpoint to the quorum queue
`<prefix>.rules.checkpoint.<i>` (`x-max-length: 1`, `x-overflow: drop-head`: only the
newest is kept; replicated on a cluster) every `[central] checkpoint_interval`, and on a
clean stop. Whoever takes the partition over reads it (a get, then a requeue: it stays)
and compares it with its own state file's, which a process that owned the partition
before still has: the further one wins. The state is the one the state file holds
(alert states and deadman clocks, no windows: as after an edge's restart), read in one
go with the offset it belongs to, so the two always match.

The body is JSON: {"version": 1, "stream": …, "next": …, "saved_at": …,
"records": [StateRecord fields…], "clocks": [{"labels": …, "last_seen": …}]}.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sensord.rules import ClockRecord, Snapshot, StateRecord
from sensord.state.store import StateStore
from sensord.telemetry.partition import partition_of_labels

VERSION = 1
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream: str
    next: int | None  # the offset of the next message to read; None: never read
    snapshot: Snapshot

    def encode(self) -> bytes:
        s = self.snapshot
        return json.dumps(
            {
                "version": VERSION,
                "stream": self.stream,
                "next": self.next,
                "saved_at": s.saved_at,
                "records": [r._asdict() for r in s.records],
                "clocks": [{"labels": c.labels, "last_seen": c.last_seen} for c in s.clocks],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> Checkpoint:
        """Raises ValueError on a body this version cannot read."""
        try:
            data: dict[str, Any] = json.loads(body)
            if data.get("version") != VERSION:
                raise ValueError(f"checkpoint version {data.get('version')!r}")
            records = [StateRecord(**r) for r in data["records"]]
            clocks = [ClockRecord(dict(c["labels"]), float(c["last_seen"])) for c in data["clocks"]]
            nxt = data["next"]
            saved = data["saved_at"]
            return cls(
                str(data["stream"]),
                int(nxt) if nxt is not None else None,
                Snapshot(records, clocks, saved_at=float(saved) if saved is not None else None),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a checkpoint: {type(exc).__name__}: {exc}") from None

    def further_than(self, other: Checkpoint) -> bool:
        if self.next is None:
            return False
        return other.next is None or self.next > other.next


def local_checkpoint(
    state: StateStore, stream: str, partition: int, by: Sequence[str], partitions: int
) -> Checkpoint:
    """The state file's checkpoint of one partition: its offset and its sensors' state."""
    with state.transaction():  # one read: the offset and the rows it belongs to
        snapshot = state.load()
        nxt = state.offsets().get(stream)

    def mine(labels: dict[str, str]) -> bool:
        return partition_of_labels(labels, by, partitions) == partition

    return Checkpoint(
        stream,
        nxt,
        Snapshot(
            [r for r in snapshot.records if r.expect is None and mine(r.labels)],
            [c for c in snapshot.clocks if mine(c.labels)],
            saved_at=snapshot.saved_at,
        ),
    )


def replace_local(state: StateStore, old: Checkpoint, new: Checkpoint) -> None:
    """Make the state file hold `new` for this partition (a further one from another
    process): the rows of `old` deleted, those of `new` written, its offset with them."""
    tombstones = [StateRecord(r.rule, r.rule_json, r.labels) for r in old.snapshot.records]
    with state.transaction() as conn:
        state.write(conn, tombstones)
        state.write(
            conn,
            new.snapshot.records,
            new.snapshot.clocks,
            offsets={new.stream: new.next} if new.next is not None else None,
        )
