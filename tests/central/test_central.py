"""`sensord run --role rules` on the real RabbitMQ: the readings streams in, alerts out
through a notify worker to a webhook; restarts, takeovers and re-sent copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sensord.testing.webhook import WebhookSink
from tests.central.support import (
    Central,
    delivered,
    dump,
    expected_transitions,
    flapping_packs,
    publish_packs,
)


async def test_restart_resumes_after_the_last_committed_message(tmp_path: Path) -> None:
    """SIGKILL mid-stream, restart on the same state file: every transition once."""
    async with WebhookSink() as hook, Central(tmp_path, hook).running() as c:
        packs = flapping_packs(["plant-1", "plant-2"], devices=5, rounds=40)
        expected = expected_transitions(c.rules_yaml, packs)
        first = c.start_rules("rules-a", state="a.db")
        await c.wait_owned(first, 1)
        await publish_packs(c.prefix, packs[:20])
        await c.settled(sum(expected_transitions(c.rules_yaml, packs[:20]).values()))
        await publish_packs(c.prefix, packs[20:30])
        await asyncio.sleep(0.2)  # some of these judged, maybe not all
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        await publish_packs(c.prefix, packs[30:])
        second = c.start_rules("rules-a2", state="a.db")
        await c.wait_owned(second, 1)
        await c.settled(sum(expected.values()))
        got = delivered(hook)
        assert got == expected, dump(got - expected) + " missing: " + dump(expected - got)
        m = await second.metrics()
        # resumed after the last commit: the second process judged only what was left
        assert 0 < m["sensord_central_readings_total"] < 10 * 40 * 0.75


async def test_takeover_by_another_host_from_the_checkpoint(tmp_path: Path) -> None:
    """The owner dies; a process with a state file of its own takes over from the
    published checkpoint: no transition missing, none notified twice."""
    async with WebhookSink() as hook, Central(tmp_path, hook).running() as c:
        packs = flapping_packs(["plant-1"], devices=8, rounds=30)
        expected = expected_transitions(c.rules_yaml, packs)
        first = c.start_rules("host-a", state="a.db")
        await c.wait_owned(first, 1)
        second = c.start_rules("host-b", state="b.db")
        await second.wait_ready()
        await asyncio.sleep(1.0)
        assert await c.owned(second) == 0  # the lock is held: host-b waits
        await publish_packs(c.prefix, packs[:15])
        await c.settled(sum(expected_transitions(c.rules_yaml, packs[:15]).values()))
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        await c.wait_owned(second, 1)
        await publish_packs(c.prefix, packs[15:])
        await c.settled(sum(expected.values()))
        got = delivered(hook)
        assert got == expected, dump(got - expected) + " missing: " + dump(expected - got)
        m = await second.metrics()
        assert m["sensord_central_takeovers_total"] == 1
        assert "the previous owner's checkpoint" in second.stderr() + second.stdout()


async def test_copies_of_a_message_are_judged_once(tmp_path: Path) -> None:
    async with WebhookSink() as hook, Central(tmp_path, hook).running() as c:
        packs = flapping_packs(["plant-1"], devices=3, rounds=10)
        expected = expected_transitions(c.rules_yaml, packs)
        p = c.start_rules("rules", state="r.db")
        await c.wait_owned(p, 1)
        await publish_packs(c.prefix, packs, copies=2)
        await c.settled(sum(expected.values()))
        assert delivered(hook) == expected
        m = await p.wait_metric("sensord_central_copies_skipped_total", 10)
        assert m["sensord_central_readings_total"] == 30


async def test_partitions_split_over_processes_and_move_when_one_dies(tmp_path: Path) -> None:
    """Two partitions, two rules processes: one each; one dies, the other takes its
    partition over; every transition of every site once."""
    async with WebhookSink() as hook, Central(tmp_path, hook, partitions=2).running() as c:
        sites = [f"site-{i}" for i in range(6)]
        packs = flapping_packs(sites, devices=3, rounds=24)
        expected = expected_transitions(c.rules_yaml, packs)
        a = c.start_rules("host-a", state="a.db")
        await c.wait_owned(a, 2)  # alone: it takes both
        await a.stop()
        a = c.start_rules("host-a2", state="a.db")
        b = c.start_rules("host-b", state="b.db")
        await a.wait_ready()
        await b.wait_ready()
        for _ in range(100):  # each takes one (which one is a race)
            if await c.owned(a) + await c.owned(b) == 2:
                break
            await asyncio.sleep(0.1)
        split = [await c.owned(a), await c.owned(b)]
        await publish_packs(c.prefix, packs[:12], partitions=2)
        await c.settled(sum(expected_transitions(c.rules_yaml, packs[:12]).values()))
        victim, survivor = a, b
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        await c.wait_owned(survivor, 2)
        await publish_packs(c.prefix, packs[12:], partitions=2)
        await c.settled(sum(expected.values()))
        got = delivered(hook)
        assert got == expected, dump(got - expected) + " missing: " + dump(expected - got)
        assert split == [1.0, 1.0]  # started together: they split the partitions
