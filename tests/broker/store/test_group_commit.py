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
    sizes: list[int] = []
    written = 0
    try:
        # batches of 20 rows of 2 KiB until the WAL outgrew the limit and was truncated
        # after (bounded: 300 batches, ~12 MiB)
        while written < 300 * 20 and not _truncated_after_growing(sizes, limit):
            await asyncio.gather(*(
                writer.write(lambda c, n=written + i: c.execute(
                    "INSERT INTO rows VALUES (?, ?)", (n, "x" * 2048)
                ).rowcount)
                for i in range(20)
            ))  # fmt: skip
            written += 20
            await asyncio.sleep(0.01)  # the checkpoint thread gets its turn
            sizes.append(wal.stat().st_size)
    finally:
        await writer.stop()
    assert _truncated_after_growing(sizes, limit), sizes
    check = sqlite3.connect(database)
    assert check.execute("SELECT count(*), count(DISTINCT n) FROM rows").fetchone() == (
        written,
        written,
    )
    check.close()


def _truncated_after_growing(sizes: list[int], limit: int) -> bool:
    grown = next((i for i, size in enumerate(sizes) if size > limit), None)
    return grown is not None and any(size < limit for size in sizes[grown:])
