"""The default store: one SQLite file (WAL), one connection on one worker thread.

Every method is one hop to the worker thread and, on the present path, one statement.
Other processes (the CLI) may use the same file at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from broker.errors import ConflictError, StoreUnavailableError
from broker.store.base import ChallengeRecord, ChallengeState, Store, TokenRecord

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE tokens (
    key         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    cidrs       TEXT NOT NULL,
    admin       INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE challenges (
    id          TEXT PRIMARY KEY,
    fqdn        TEXT NOT NULL,
    value       TEXT NOT NULL,
    zone        TEXT NOT NULL,
    provider    TEXT NOT NULL,
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    state       TEXT NOT NULL,
    ended_at    REAL
);
CREATE UNIQUE INDEX challenges_live ON challenges (fqdn, value) WHERE state = 'present';
CREATE INDEX challenges_due ON challenges (expires_at) WHERE state = 'present';
CREATE INDEX challenges_ended ON challenges (ended_at) WHERE state != 'present';
"""

_CHALLENGE_COLUMNS = (
    "id, fqdn, value, zone, provider, owner, created_at, expires_at, state, ended_at"
)
_TOKEN_COLUMNS = "name, key, digest, scopes, cidrs, admin, created_at, expires_at, revoked_at"  # noqa: S105


class SqliteStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        await self._run(self._connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _connect(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise sqlite3.OperationalError(
                f"schema version {version} is newer than this broker knows ({SCHEMA_VERSION})"
            )
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreUnavailableError(f"store {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("connection is closed")
        return self._conn

    async def ping(self) -> None:
        await self._run(lambda: self._db().execute("SELECT 1").fetchone())

    async def create_token(self, token: TokenRecord) -> None:
        def insert() -> None:
            self._db().execute(
                f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                _token_row(token),
            )

        try:
            await self._run(insert)
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"a token named {token.name!r} already exists: revoke it or choose another name"
            ) from None

    async def token_by_key(self, key: str) -> TokenRecord | None:
        row = await self._run(
            self._fetchone, f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE key = ?", (key,)
        )
        return None if row is None else _token(row)

    async def list_tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = await self._run(
            self._fetchall, f"SELECT {_TOKEN_COLUMNS} FROM tokens {where} ORDER BY name", ()
        )
        return [_token(row) for row in rows]

    async def revoke_token(self, name: str, at: float) -> TokenRecord | None:
        row = await self._run(
            self._fetchone,
            f"UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
            f"RETURNING {_TOKEN_COLUMNS}",
            (at, name),
        )
        return None if row is None else _token(row)

    async def count_tokens(self) -> int:
        row = await self._run(self._fetchone, "SELECT count(*) FROM tokens", ())
        return int(row[0]) if row else 0

    async def put_challenge(
        self, record: ChallengeRecord, max_values: int
    ) -> tuple[ChallengeRecord, bool] | None:
        row = await self._run(
            self._fetchone,
            f"INSERT INTO challenges ({_CHALLENGE_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,? "
            "WHERE (SELECT count(*) FROM challenges WHERE fqdn = ? AND state = 'present') < ? "
            "OR EXISTS (SELECT 1 FROM challenges WHERE fqdn = ? AND value = ? "
            "AND state = 'present') "
            "ON CONFLICT (fqdn, value) WHERE state = 'present' DO UPDATE SET "
            "expires_at = max(challenges.expires_at, excluded.expires_at) "
            f"RETURNING {_CHALLENGE_COLUMNS}",
            (*_challenge_row(record), record.fqdn, max_values, record.fqdn, record.value),
        )
        if row is None:
            return None
        stored = _challenge(row)
        return stored, stored.id == record.id

    async def live_challenge(self, fqdn: str, value: str) -> ChallengeRecord | None:
        row = await self._run(
            self._fetchone,
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges "
            "WHERE fqdn = ? AND value = ? AND state = 'present'",
            (fqdn, value),
        )
        return None if row is None else _challenge(row)

    async def challenge(self, challenge_id: str) -> ChallengeRecord | None:
        row = await self._run(
            self._fetchone,
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE id = ?",
            (challenge_id,),
        )
        return None if row is None else _challenge(row)

    async def end_challenge(
        self, challenge_id: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        row = await self._run(
            self._fetchone,
            "UPDATE challenges SET state = ?, ended_at = ? WHERE id = ? AND state = 'present' "
            f"RETURNING {_CHALLENGE_COLUMNS}",
            (state.value, at, challenge_id),
        )
        return None if row is None else _challenge(row)

    async def delete_challenge(self, challenge_id: str) -> None:
        await self._run(self._fetchone, "DELETE FROM challenges WHERE id = ?", (challenge_id,))

    async def live_challenges(self) -> list[ChallengeRecord]:
        rows = await self._run(
            self._fetchall,
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE state = 'present' "
            "ORDER BY created_at",
            (),
        )
        return [_challenge(row) for row in rows]

    async def due_challenges(self, now: float, limit: int = 500) -> list[ChallengeRecord]:
        rows = await self._run(
            self._fetchall,
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges "
            "WHERE state = 'present' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [_challenge(row) for row in rows]

    async def count_live(self) -> int:
        row = await self._run(
            self._fetchone, "SELECT count(*) FROM challenges WHERE state = 'present'", ()
        )
        return int(row[0]) if row else 0

    async def purge_ended(self, before: float) -> int:
        def purge() -> int:
            cursor = self._db().execute(
                "DELETE FROM challenges WHERE state != 'present' AND ended_at < ?", (before,)
            )
            return cursor.rowcount

        return await self._run(purge)

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        rows = self._db().execute(sql, params).fetchall()
        return rows[0] if rows else None

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db().execute(sql, params).fetchall()


def _token_row(token: TokenRecord) -> tuple[Any, ...]:
    return (
        token.name,
        token.key,
        token.digest,
        json.dumps(list(token.scopes)),
        json.dumps(list(token.cidrs)),
        int(token.admin),
        token.created_at,
        token.expires_at,
        token.revoked_at,
    )


def _token(row: tuple[Any, ...]) -> TokenRecord:
    name, key, digest, scopes, cidrs, admin, created_at, expires_at, revoked_at = row
    return TokenRecord(
        name=name,
        key=key,
        digest=digest,
        scopes=tuple(json.loads(scopes)),
        cidrs=tuple(json.loads(cidrs)),
        admin=bool(admin),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def _challenge_row(record: ChallengeRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.fqdn,
        record.value,
        record.zone,
        record.provider,
        record.owner,
        record.created_at,
        record.expires_at,
        record.state.value,
        record.ended_at,
    )


def _challenge(row: tuple[Any, ...]) -> ChallengeRecord:
    id_, fqdn, value, zone, provider, owner, created_at, expires_at, state, ended_at = row
    return ChallengeRecord(
        id=id_,
        fqdn=fqdn,
        value=value,
        zone=zone,
        provider=provider,
        owner=owner,
        created_at=created_at,
        expires_at=expires_at,
        state=ChallengeState(state),
        ended_at=ended_at,
    )
