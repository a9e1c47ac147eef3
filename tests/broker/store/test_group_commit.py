"""The SQLite group-commit writer keeps its WAL bounded under writes that never pause:
passive checkpoints cannot catch up with them, so past the limit the WAL is checkpointed
in full and truncated, and no write is lost or refused meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from broker.store.group_commit import GroupCommitWriter


async def test_the_wal_is_truncated_past_its_limit_and_every_write_lands(tmp_path: Path):
    database = tmp_path / "broker.db"
    wal = tmp_path / "broker.db-wal"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    setup = connect()
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE rows (n INTEGER, payload TEXT)")
    setup.close()
    limit = 256 * 1024
    writer = GroupCommitWriter(connect, wal, checkpoint_every=20, wal_limit=limit)
    await writer.start()

    async def write_batch(first: int) -> None:
        await asyncio.gather(*(
            writer.write(lambda c, n=first + i: c.execute(
                "INSERT INTO rows VALUES (?, ?)", (n, "x" * 2048)
            ).rowcount)
            for i in range(20)
        ))  # fmt: skip

    sizes: list[int] = []
    written = 0
    try:
        # a reader holding an old snapshot, as a long query would: no checkpoint can
        # finish, so the WAL grows past the limit whatever the timing
        pin = connect()
        pin.execute("BEGIN")
        pin.execute("SELECT count(*) FROM rows").fetchone()
        while wal.stat().st_size <= 2 * limit:
            await write_batch(written)
            written += 20
        pin.execute("COMMIT")
        pin.close()
        sizes.append(wal.stat().st_size)
        # then writes go on (bounded: 200 batches), and the next checkpoints truncate it
        for _ in range(200):
            await write_batch(written)
            written += 20
            await asyncio.sleep(0.01)  # the checkpoint thread gets its turn
            sizes.append(wal.stat().st_size)
            if sizes[-1] < limit:
                break
    finally:
        await writer.stop()
    assert sizes[0] > 2 * limit, sizes
    assert sizes[-1] < limit, sizes
    check = sqlite3.connect(database)
    assert check.execute("SELECT count(*), count(DISTINCT n) FROM rows").fetchone() == (
        written,
        written,
    )
    check.close()
