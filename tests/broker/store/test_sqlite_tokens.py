"""SQLite keeps the token generation in memory between commits of other connections: a
token change by another process (the CLI) must still be seen by the very next read, and
one by this process even while its write is in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker.auth import issue_token
from broker.store.sqlite import SqliteStore


async def test_a_token_change_by_another_process_is_seen_by_the_next_read(tmp_path: Path):
    server, cli = SqliteStore(tmp_path / "broker.db"), SqliteStore(tmp_path / "broker.db")
    await server.open()
    await cli.open()
    try:
        first = await server.token_generation()
        assert await server.token_generation() == first  # nothing changed: same answer
        await cli.create_token(issue_token("web1", ["example.test"]).record)
        second = await server.token_generation()
        assert second != first
        await cli.revoke_token("web1", time.time())
        assert await server.token_generation() not in (first, second)
    finally:
        await cli.close()
        await server.close()


async def test_a_token_change_by_this_process_is_seen_at_once_and_during_the_write(
    tmp_path: Path,
):
    store = SqliteStore(tmp_path / "broker.db")
    await store.open()
    try:
        before = await store.token_generation()
        await store.create_token(issue_token("web1", ["example.test"]).record)
        created = await store.token_generation()
        assert created != before

        revoking = asyncio.ensure_future(store.revoke_token("web1", time.time()))
        await asyncio.sleep(0)  # the write is queued for the group commit, not yet done
        assert not revoking.done()
        seen_during = await store.token_generation()
        await revoking
        assert seen_during in (created, await store.token_generation())
        assert await store.token_generation() != created
    finally:
        await store.close()
