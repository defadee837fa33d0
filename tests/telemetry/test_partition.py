"""The partition contract (telemetry/partition.py) pinned with tables, and `readings tail`'s
choice of streams: every edge and rules process, on any host or Python, must agree."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from sensord.cli.readings import select_streams
from sensord.events import Reading
from sensord.telemetry.partition import partition_of_labels, partitioner, stream_names


@pytest.mark.parametrize(
    ("labels", "by", "n", "expected"),
    [
        # CRC-32 (IEEE) of the key: crc32(b"plant-1") = 0x539584E0
        ({"site": "plant-1"}, ["site"], 3, 0x539584E0 % 3),
        ({"site": "plant-1"}, ["site"], 4, 0x539584E0 % 4),
        ({"site": "plant-6"}, ["site"], 3, 2),
        ({"site": "plant-2"}, ["site"], 3, 1),
        ({"site": "plant-1", "room": "a"}, ["site", "room"], 4, 3),  # b"plant-1\x1fa"
        ({"site": "plant-1"}, ["site"], 1, 0),
    ],
)
def test_partition_of_labels_is_the_crc32_of_the_key(
    labels: dict[str, str], by: list[str], n: int, expected: int
) -> None:
    assert partition_of_labels(labels, by, n) == expected


@pytest.mark.parametrize("by", [["site"], ["device"], ["site", "kind"], ["site", "room"], ["room"]])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_the_senders_partitioner_agrees_with_the_contract(by: list[str], n: int) -> None:
    part = partitioner(by, n)
    for i in range(60):
        labels = {"room": f"r{i % 4}"} if i % 5 else {}  # an absent label counts as ""
        r = Reading.trusted(f"s{i % 9}", f"d{i}", "temperature", 1.0, 1.8e9, labels, None)
        full = {"site": r.site, "device": r.device, "kind": r.kind, **labels}
        assert part(r) == partition_of_labels(full, by, n)


def test_stream_names_one_partition_keeps_the_name_of_before() -> None:
    assert stream_names("x", 1) == ["x.readings"]
    assert stream_names("x", 3) == ["x.readings.0", "x.readings.1", "x.readings.2"]


@pytest.mark.parametrize(
    ("partitions", "chosen", "offset", "expected"),
    [
        (1, [], "next", {0: "p.readings"}),
        (1, [], 12, {0: "p.readings"}),
        (3, [], "first", {0: "p.readings.0", 1: "p.readings.1", 2: "p.readings.2"}),
        (3, [2, 0, 2], "next", {0: "p.readings.0", 2: "p.readings.2"}),
        (3, [1], 12, {1: "p.readings.1"}),
        (3, [], datetime(2026, 12, 3, tzinfo=UTC), {i: f"p.readings.{i}" for i in range(3)}),
    ],
)
def test_tail_reads_every_stream_or_the_chosen_ones(
    partitions: int, chosen: list[int], offset: str | int | datetime, expected: dict[int, str]
) -> None:
    assert select_streams("p", partitions, chosen, offset) == expected


@pytest.mark.parametrize(
    ("partitions", "chosen", "offset", "message"),
    [
        (3, [], 12, "--from 12: an offset is a position in one stream, and 3 are read"),
        (3, [0, 1], 12, "and 2 are read; choose one with --partition I"),
        (3, [3], "next", "--partition 3: [telemetry] partitions is 3, so a partition is 0 to 2"),
        (1, [1], "next", "--partition 1: [telemetry] partitions is 1"),
        (2, [-1], "next", "--partition -1"),
    ],
)
def test_tail_refuses_an_offset_over_streams_and_a_partition_out_of_range(
    partitions: int, chosen: list[int], offset: str | int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        select_streams("p", partitions, chosen, offset)
