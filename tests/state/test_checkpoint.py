"""WAL checkpoints run beside the writer, not inside its commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sensord.delivery.outbox import open_state_db
from sensord.state.checkpoint import Checkpointer

BLOB = b"x" * 4000  # about one page per row


def _write(conn: object, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        conn.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, BLOB))  # type: ignore[attr-defined]
        conn.execute("COMMIT")  # type: ignore[attr-defined]


def test_commits_no_longer_checkpoint_and_the_checkpointer_keeps_the_wal_bounded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    wal = tmp_path / "state.db-wal"
    conn = open_state_db(path, autocheckpoint=False)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    _write(conn, 1500)
    grown = wal.stat().st_size
    assert grown > 1000 * 4096  # past SQLite's automatic checkpoint: none ran in a commit
    checkpointer = Checkpointer(path)
    busy, frames, done = checkpointer.checkpoint()
    checkpointer.close()
    assert busy == 0
    assert done == frames > 1000  # every frame copied into the database file
    _write(conn, 1500, start=1500)
    assert wal.stat().st_size < grown * 1.2  # the WAL starts over instead of doubling
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (3000,)
    conn.close()


async def test_the_checkpointer_runs_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = open_state_db(path, autocheckpoint=False)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    checkpointer = Checkpointer(path, interval=0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(checkpointer.run(stop))
    _write(conn, 50)
    deadline = asyncio.get_running_loop().time() + 10
    while checkpointer.checkpoints < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert checkpointer.checkpoints >= 3
    conn.close()
