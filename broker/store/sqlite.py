"""The default store: one SQLite file in WAL mode.

Reads run inline on the event loop over their own connection: WAL readers never wait for
writers, and every read here is an indexed lookup of microseconds. Writes are committed
together at the end of each loop iteration (see group_commit), so the present path costs
one statement in a shared transaction. Other processes (the CLI) may use the same file
at the same time; while one holds the write lock, writes wait on a thread instead.

One process serves a SQLite store, so it needs no change feed: tokens carry a generation
counter (bumped by triggers, whoever writes), leadership is a lock on a file beside the
database, and the RRset lock of the service within the process is the only one needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from broker.errors import StoreUnavailableError
from broker.store.base import AuditEventRecord, ChallengeRecord
from broker.store.changes import Leadership
from broker.store.group_commit import GroupCommitWriter
from broker.store.rows import (
    AUDIT_COLUMNS,
    CHALLENGE_COLUMNS,
    Row,
    audit_row,
    challenge_from_row,
    challenge_row,
)
from broker.store.schema import SchemaError, needs_upgrade, sqlite_version, upgrade_sqlite
from broker.store.sql import DuplicateRowError, SqlStore

T = TypeVar("T")

_PUT_CHALLENGE = (
    f"INSERT INTO challenges ({CHALLENGE_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,?,?,? "
    "WHERE (SELECT count(*) FROM challenges WHERE fqdn = ? AND state = 'present') < ? "
    "OR EXISTS (SELECT 1 FROM challenges WHERE fqdn = ? AND value = ? AND state = 'present') "
    "ON CONFLICT (fqdn, value) WHERE state = 'present' DO UPDATE SET "
    "expires_at = max(challenges.expires_at, excluded.expires_at) "
    f"RETURNING {CHALLENGE_COLUMNS}"
)


_ADD_AUDIT_EVENT = f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?)"


class SqliteStore(SqlStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._leadership = FileLeadership(path.with_name(path.name + ".leader"))
        self._token_generation: int | None = None

    async def open(self) -> None:
        try:
            self._prepare_file()
            if needs_upgrade(sqlite_version(self.path)):
                await asyncio.to_thread(upgrade_sqlite, self.path)
        except SchemaError as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None
        self._reader = self._connect()
        self._writer = GroupCommitWriter(
            self._connect, self.path.with_name(self.path.name + "-wal")
        )
        try:
            await self._writer.start()
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None

    async def close(self) -> None:
        await self._leadership.release()
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _prepare_file(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=5.0, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def _select(self, sql: str, params: Row = ()) -> list[Row]:
        if self._reader is None:
            raise StoreUnavailableError(f"SQLite store {self.path} is not open")
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None

    async def _modify(self, sql: str, params: Row = ()) -> list[Row]:
        rows: list[Row] = await self._write(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    async def _modify_count(self, sql: str, params: Row = ()) -> int:
        count: int = await self._write(lambda conn: conn.execute(sql, params).rowcount)
        return count

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailableError(f"SQLite store {self.path} is not open")
        try:
            result: T = await self._writer.write(fn)
        except sqlite3.IntegrityError:
            raise DuplicateRowError from None
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None
        return result

    async def ping(self) -> None:
        await self._select("SELECT 1")
        await self._write(lambda conn: conn.execute("SELECT 1").fetchone())

    async def put_challenge(
        self, record: ChallengeRecord, max_values: int
    ) -> tuple[ChallengeRecord, bool] | None:
        row = await self._modify_one(
            _PUT_CHALLENGE,
            (*challenge_row(record), record.fqdn, max_values, record.fqdn, record.value),
        )
        if row is None:
            return None
        stored = challenge_from_row(row)
        return stored, stored.id == record.id

    async def add_audit_events(self, events: list[AuditEventRecord]) -> None:
        """One prepared statement run per row: half the time of one statement with every
        row's values on SQLite, and it runs on the event loop."""
        rows = [audit_row(event) for event in events]
        await self._write(lambda conn: conn.executemany(_ADD_AUDIT_EVENT, rows).rowcount)

    async def token_generation(self) -> int | None:
        """Read again only when another connection (the CLI, say) committed since the
        last read, or this process is writing or wrote a token: SQLite's data version of
        the writer's connection moves with every commit but its own, and costs no page
        read."""
        version = None if self._writer is None else self._writer.data_version()
        if version is None or version != self._token_version or self._token_writes:
            row = await self._select_one("SELECT value FROM generations WHERE name = 'tokens'")
            self._token_generation = None if row is None else int(row[0])
            self._token_version = version
        return self._token_generation

    def leadership(self) -> Leadership:
        return self._leadership

    @contextlib.asynccontextmanager
    async def rrset_lock(self, provider: str, fqdn: str) -> AsyncIterator[None]:
        yield


class FileLeadership(Leadership):
    """An exclusive lock on a file: one process at a time (the kernel drops it when the
    process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
