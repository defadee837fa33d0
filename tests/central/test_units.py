"""The pure parts of central rules: derived event ids, checkpoints, where a partition
starts, and the partition a sensor is in."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensord.alerts.lifecycle import build_event, derived_event_id
from sensord.central.checkpoint import Checkpoint, local_checkpoint, replace_local
from sensord.central.reader import start_offset
from sensord.central.settings import CentralSettings
from sensord.events import Reading
from sensord.rules import AlertTransition, ClockRecord, Rule, Snapshot, StateRecord
from sensord.state.store import StateStore
from sensord.telemetry.partition import partition_of_labels, partitioner, stream_names

RULE = Rule.model_validate({"name": "hot", "match": {"kind": "temperature"}, "above": 50})


def transition(
    status: str = "firing", starts: float = 1.8e9, at: float = 1.8e9 + 5
) -> AlertTransition:
    labels = {"site": "s", "device": "d", "kind": "temperature"}
    return AlertTransition(RULE, status, labels, 60.0, starts, at, None, 50.0)  # type: ignore[arg-type]


def test_derived_event_ids_repeat_for_the_same_episode_only() -> None:
    a = build_event(transition(), derive_id=True)
    again = build_event(transition(at=1.8e9 + 9), derive_id=True)  # a later tick fired it
    assert a.event_id == again.event_id
    assert uuid.UUID(a.event_id).version == 5
    assert build_event(transition("resolved"), derive_id=True).event_id != a.event_id
    assert build_event(transition(starts=1.8e9 + 1), derive_id=True).event_id != a.event_id
    assert build_event(transition()).event_id != build_event(transition()).event_id  # random
    assert a.event_id == derived_event_id(a.fingerprint, "firing", 1.8e9)


def test_checkpoint_round_trip_and_order() -> None:
    rec = StateRecord(
        "hot", RULE.model_dump_json(), {"site": "s"}, firing_since=1.0, announced_since=1.0
    )
    cp = Checkpoint(
        "p.readings", 42, Snapshot([rec], [ClockRecord({"site": "s"}, 3.0)], saved_at=9.0)
    )
    back = Checkpoint.decode(cp.encode())
    assert back == cp
    assert back.further_than(Checkpoint("p.readings", 41, Snapshot([], [])))
    assert not back.further_than(Checkpoint("p.readings", 42, Snapshot([], [])))
    assert Checkpoint("x", 0, Snapshot([], [])).further_than(
        Checkpoint("x", None, Snapshot([], []))
    )
    with pytest.raises(ValueError, match="version"):
        Checkpoint.decode(b'{"version": 99}')
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.decode(b'{"version": 1}')


def test_local_checkpoint_holds_only_its_partition(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "s.db")
    sites = [f"site-{i}" for i in range(20)]
    records = [
        StateRecord(
            "hot",
            RULE.model_dump_json(),
            {"site": s, "device": "d", "kind": "t"},
            firing_since=1.0,
            announced_since=1.0,
        )
        for s in sites
    ]
    with store.transaction() as conn:
        store.write(conn, records, offsets={"p.readings.0": 7, "p.readings.1": 9})
    zero = local_checkpoint(store, "p.readings.0", 0, ["site"], 2)
    one = local_checkpoint(store, "p.readings.1", 1, ["site"], 2)
    assert (zero.next, one.next) == (7, 9)
    assert len(zero.snapshot.records) + len(one.snapshot.records) == 20
    assert all(partition_of_labels(r.labels, ["site"], 2) == 0 for r in zero.snapshot.records)
    # a further checkpoint from elsewhere replaces this partition's rows, not the other's
    assert zero.snapshot.records
    assert one.snapshot.records
    theirs = Checkpoint("p.readings.0", 100, Snapshot(zero.snapshot.records[:1], []))
    replace_local(store, zero, theirs)
    again = local_checkpoint(store, "p.readings.0", 0, ["site"], 2)
    assert again.next == 100
    assert again.snapshot.records == zero.snapshot.records[:1]
    assert local_checkpoint(store, "p.readings.1", 1, ["site"], 2).snapshot.records == (
        one.snapshot.records
    )
    store.close()


def test_start_offsets_and_settings() -> None:
    assert start_offset("first") == "first"
    at = start_offset("10m", now=1.8e9)
    assert at == datetime.fromtimestamp(1.8e9 - 600, tz=UTC)
    with pytest.raises(ValueError, match="first, last, next or a duration"):
        CentralSettings(start="yesterday")
    with pytest.raises(ValueError, match="longer than 0s"):
        CentralSettings(checkpoint_interval=0)


def test_partitions_are_stable_and_cover_every_stream() -> None:
    assert stream_names("p", 1) == ["p.readings"]
    assert stream_names("p", 3) == ["p.readings.0", "p.readings.1", "p.readings.2"]
    # CRC-32 is the contract: the same on every host and Python (not hash())
    assert partition_of_labels({"site": "plant-1"}, ["site"], 4) == 0x539584E0 % 4
    key = {"site": "plant-1", "room": "a"}
    assert partition_of_labels(key, ["site", "room"], 7) == 0x029DAAEF % 7
    part = partitioner(["site"], 4)
    seen = {part(Reading.trusted(f"site-{i}", "d", "k", 1.0, 1.0, {}, None)) for i in range(64)}
    assert seen == {0, 1, 2, 3}
    labelled = partitioner(["site", "room"], 4)
    r = Reading.trusted("s", "d", "k", 1.0, 1.0, {"room": "a"}, None)
    assert labelled(r) == partition_of_labels({"site": "s", "room": "a"}, ["site", "room"], 4)


def test_batched_at_header() -> None:
    from sensord.central.reader import batched_at

    assert batched_at("1800000000.125") == 1800000000.125
    assert batched_at(b"1800000000.5") == 1800000000.5
    before = time.time()
    assert batched_at(None) >= before
    assert batched_at("nan") >= before
    assert batched_at("soon") >= before
