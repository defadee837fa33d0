"""Which readings stream a reading goes to, when `[telemetry] partitions` is above 1.

The contract (docs/telemetry.md, "Partitions"): N streams `<prefix>.readings.0` …
`<prefix>.readings.<N-1>` (one stream `<prefix>.readings` when N is 1, as before), and a
reading's partition is CRC-32 (zlib, IEEE) of the values of its `partition_by` labels,
joined by U+001F (an absent label counts as ""), modulo N. CRC-32 is the same on every
host and every Python (unlike `hash()`), and cheap.

The partition key is `site` by default: a site's sensors share one partition, so a
central rules process (`--role rules`) that owns it sees all of them, and a rule across a
site's sensors (`aggregate.by: [site, …]`) judges the whole site. Each sensor is in
exactly one partition, so its rule state lives in exactly one rules process.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence

from sensord.events import Reading

SEPARATOR = "\x1f"
CORE = ("site", "device", "kind")
_CACHE_MAX = 100_000  # keys whose partition the sender keeps


def stream_names(prefix: str, partitions: int) -> list[str]:
    """The readings streams, partition i at index i."""
    if partitions == 1:
        return [f"{prefix}.readings"]
    return [f"{prefix}.readings.{i}" for i in range(partitions)]


def partition_of_labels(labels: Mapping[str, str], by: Sequence[str], partitions: int) -> int:
    """The partition of a sensor with these labels (site, device and kind included)."""
    if partitions == 1:
        return 0
    key = SEPARATOR.join(labels.get(name, "") for name in by)
    return zlib.crc32(key.encode()) % partitions


def partitioner(by: Sequence[str], partitions: int) -> Callable[[Reading], int]:
    """`reading -> partition`, for the stream's sender (not the per-reading path). Keys
    repeat (a site's every reading), so each key's partition is kept, bounded: a dict
    lookup instead of the encode and CRC (~0.08 us against ~0.5 us a reading here)."""
    names = tuple(by)
    if partitions == 1:
        return lambda _reading: 0
    cache: dict[str, int] = {}

    def of_key(key: str) -> int:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        p = cache[key] = zlib.crc32(key.encode()) % partitions
        return p

    if len(names) == 1 and names[0] in CORE:
        # the usual case (site): the key is the field itself
        (only,) = names

        def one(reading: Reading) -> int:
            key = reading.__dict__[only]
            p = cache.get(key)
            return of_key(key) if p is None else p

        return one
    if all(name in CORE for name in names):
        # only the core fields, read straight from the reading
        def core(reading: Reading) -> int:
            fields = reading.__dict__
            key = SEPARATOR.join(fields[name] for name in names)
            p = cache.get(key)
            return of_key(key) if p is None else p

        return core

    def labelled(reading: Reading) -> int:
        fields = reading.__dict__
        labels = fields["labels"]
        key = SEPARATOR.join(
            fields[name] if name in CORE else labels.get(name, "") for name in names
        )
        p = cache.get(key)
        return of_key(key) if p is None else p

    return labelled
