"""The default store: one SQLite file in WAL mode.

Reads run inline on the event loop over their own connection: WAL readers never wait for
writers, and every read here is an indexed lookup of microseconds. Writes are committed
together at the end of each loop iteration (see group_commit), so the present path costs
one statement in a shared transaction. Other processes (the CLI) may use the same file
at the same time; while one holds the write lock, writes wait on a thread instead.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from broker.errors import ConflictError, StoreUnavailableError
from broker.store.base import (
    AcmeAccountRecord,
    CertificateOrderRecord,
    ChallengeRecord,
    ChallengeState,
    OrderState,
    RegistrationRecord,
    Store,
    TokenRecord,
)
from broker.store.group_commit import GroupCommitWriter
from broker.store.rows import (
    ACCOUNT_COLUMNS,
    CHALLENGE_COLUMNS,
    ORDER_COLUMNS,
    REGISTRATION_COLUMNS,
    TOKEN_COLUMNS,
    Row,
    challenge_from_row,
    challenge_row,
    order_from_row,
    order_row,
    registration_from_row,
    registration_row,
    token_from_row,
    token_row,
)

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
    ended_at    REAL,
    delegated_from TEXT
);
CREATE UNIQUE INDEX challenges_live ON challenges (fqdn, value) WHERE state = 'present';
CREATE INDEX challenges_due ON challenges (expires_at) WHERE state = 'present';
CREATE INDEX challenges_ended ON challenges (ended_at) WHERE state != 'present';
CREATE TABLE registrations (
    username      TEXT PRIMARY KEY,
    subdomain     TEXT NOT NULL UNIQUE,
    key_hash      TEXT,
    legacy_bcrypt TEXT,
    allowfrom     TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE certificate_orders (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    names         TEXT NOT NULL,
    csr_pem       TEXT NOT NULL,
    directory     TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    fullchain_pem TEXT,
    error         TEXT
);
CREATE INDEX certificate_orders_pending ON certificate_orders (created_at)
    WHERE state = 'pending';
CREATE TABLE secrets (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

_PUT_CHALLENGE = (
    f"INSERT INTO challenges ({CHALLENGE_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,?,? "
    "WHERE (SELECT count(*) FROM challenges WHERE fqdn = ? AND state = 'present') < ? "
    "OR EXISTS (SELECT 1 FROM challenges WHERE fqdn = ? AND value = ? AND state = 'present') "
    "ON CONFLICT (fqdn, value) WHERE state = 'present' DO UPDATE SET "
    "expires_at = max(challenges.expires_at, excluded.expires_at) "
    f"RETURNING {CHALLENGE_COLUMNS}"
)


class SqliteStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None

    async def open(self) -> None:
        try:
            self._prepare_file()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None
        self._reader = self._connect()
        self._writer = GroupCommitWriter(self._connect)
        try:
            await self._writer.start()
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from None

    async def close(self) -> None:
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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise sqlite3.OperationalError(
                    f"schema version {version} is not the one this broker knows ({SCHEMA_VERSION})"
                )
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=5.0, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _read(self, sql: str, params: Row = ()) -> list[Row]:
        if self._reader is None:
            raise StoreUnavailableError(f"SQLite store {self.path} is not open")
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None

    def _read_one(self, sql: str, params: Row = ()) -> Row | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailableError(f"SQLite store {self.path} is not open")
        try:
            result: T = await self._writer.write(fn)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from None
        return result

    async def _write_returning(self, sql: str, params: Row) -> Row | None:
        rows = await self._write(lambda conn: conn.execute(sql, params).fetchall())
        return rows[0] if rows else None

    async def ping(self) -> None:
        self._read_one("SELECT 1")
        await self._write(lambda conn: conn.execute("SELECT 1").fetchone())

    async def create_token(self, token: TokenRecord) -> None:
        sql = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
        try:
            await self._write(lambda conn: conn.execute(sql, token_row(token)))
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"a token named {token.name!r} already exists: revoke it or choose another name"
            ) from None

    async def token_by_key(self, key: str) -> TokenRecord | None:
        row = self._read_one(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE key = ?", (key,))
        return None if row is None else token_from_row(row)

    async def list_tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self._read(f"SELECT {TOKEN_COLUMNS} FROM tokens {where} ORDER BY name")
        return [token_from_row(row) for row in rows]

    async def revoke_token(self, name: str, at: float) -> TokenRecord | None:
        row = await self._write_returning(
            f"UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
            f"RETURNING {TOKEN_COLUMNS}",
            (at, name),
        )
        return None if row is None else token_from_row(row)

    async def count_tokens(self) -> int:
        row = self._read_one("SELECT count(*) FROM tokens")
        return int(row[0]) if row else 0

    async def put_challenge(
        self, record: ChallengeRecord, max_values: int
    ) -> tuple[ChallengeRecord, bool] | None:
        row = await self._write_returning(
            _PUT_CHALLENGE,
            (*challenge_row(record), record.fqdn, max_values, record.fqdn, record.value),
        )
        if row is None:
            return None
        stored = challenge_from_row(row)
        return stored, stored.id == record.id

    async def live_challenge(self, fqdn: str, value: str) -> ChallengeRecord | None:
        row = self._read_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges "
            "WHERE fqdn = ? AND value = ? AND state = 'present'",
            (fqdn, value),
        )
        return None if row is None else challenge_from_row(row)

    async def challenge(self, challenge_id: str) -> ChallengeRecord | None:
        row = self._read_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = ?", (challenge_id,)
        )
        return None if row is None else challenge_from_row(row)

    async def end_challenge(
        self, challenge_id: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        row = await self._write_returning(
            "UPDATE challenges SET state = ?, ended_at = ? WHERE id = ? AND state = 'present' "
            f"RETURNING {CHALLENGE_COLUMNS}",
            (state.value, at, challenge_id),
        )
        return None if row is None else challenge_from_row(row)

    async def delete_challenge(self, challenge_id: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM challenges WHERE id = ?", (challenge_id,))
        )

    async def live_challenges(self) -> list[ChallengeRecord]:
        rows = self._read(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE state = 'present' "
            "ORDER BY created_at"
        )
        return [challenge_from_row(row) for row in rows]

    async def due_challenges(self, now: float, limit: int = 500) -> list[ChallengeRecord]:
        rows = self._read(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges "
            "WHERE state = 'present' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [challenge_from_row(row) for row in rows]

    async def count_live(self) -> int:
        row = self._read_one("SELECT count(*) FROM challenges WHERE state = 'present'")
        return int(row[0]) if row else 0

    async def purge_ended(self, before: float) -> int:
        sql = "DELETE FROM challenges WHERE state != 'present' AND ended_at < ?"
        return await self._write(lambda conn: conn.execute(sql, (before,)).rowcount)

    async def oldest_live(self, fqdn: str) -> ChallengeRecord | None:
        row = self._read_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE fqdn = ? AND state = 'present' "
            "ORDER BY created_at LIMIT 1",
            (fqdn,),
        )
        return None if row is None else challenge_from_row(row)

    async def secret(self, name: str, make: str) -> str:
        row = self._read_one("SELECT value FROM secrets WHERE name = ?", (name,))
        if row is None:
            row = await self._write_returning(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value RETURNING value",
                (name, make),
            )
        assert row is not None
        return str(row[0])

    async def create_registration(self, registration: RegistrationRecord) -> None:
        sql = f"INSERT INTO registrations ({REGISTRATION_COLUMNS}) VALUES (?,?,?,?,?,?)"
        try:
            await self._write(lambda conn: conn.execute(sql, registration_row(registration)))
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"registration {registration.username} or subdomain "
                f"{registration.subdomain} already exists"
            ) from None

    async def registration(self, username: str) -> RegistrationRecord | None:
        row = self._read_one(
            f"SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE username = ?", (username,)
        )
        return None if row is None else registration_from_row(row)

    async def list_registrations(self) -> list[RegistrationRecord]:
        rows = self._read(
            f"SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY created_at, username"
        )
        return [registration_from_row(row) for row in rows]

    async def delete_registration(self, username: str) -> RegistrationRecord | None:
        row = await self._write_returning(
            f"DELETE FROM registrations WHERE username = ? RETURNING {REGISTRATION_COLUMNS}",
            (username,),
        )
        return None if row is None else registration_from_row(row)

    async def acme_account(self, directory: str) -> AcmeAccountRecord | None:
        row = self._read_one(
            f"SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE directory = ?", (directory,)
        )
        return None if row is None else AcmeAccountRecord(*row)

    async def put_acme_account(self, account: AcmeAccountRecord) -> AcmeAccountRecord:
        row = await self._write_returning(
            f"INSERT INTO acme_accounts ({ACCOUNT_COLUMNS}) VALUES (?,?,?,?) "
            "ON CONFLICT (directory) DO UPDATE SET directory = directory "
            f"RETURNING {ACCOUNT_COLUMNS}",
            (account.directory, account.url, account.key_pem, account.created_at),
        )
        assert row is not None
        return AcmeAccountRecord(*row)

    async def create_order(self, order: CertificateOrderRecord) -> None:
        sql = f"INSERT INTO certificate_orders ({ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
        await self._write(lambda conn: conn.execute(sql, order_row(order)))

    async def order(self, order_id: str) -> CertificateOrderRecord | None:
        row = self._read_one(
            f"SELECT {ORDER_COLUMNS} FROM certificate_orders WHERE id = ?", (order_id,)
        )
        return None if row is None else order_from_row(row)

    async def pending_orders(self) -> list[CertificateOrderRecord]:
        rows = self._read(
            f"SELECT {ORDER_COLUMNS} FROM certificate_orders WHERE state = 'pending' "
            "ORDER BY created_at"
        )
        return [order_from_row(row) for row in rows]

    async def finish_order(
        self,
        order_id: str,
        state: OrderState,
        at: float,
        *,
        fullchain_pem: str | None = None,
        error: str | None = None,
    ) -> None:
        sql = (
            "UPDATE certificate_orders SET state = ?, updated_at = ?, fullchain_pem = ?, "
            "error = ? WHERE id = ?"
        )
        params = (state.value, at, fullchain_pem, error, order_id)
        await self._write(lambda conn: conn.execute(sql, params))

    async def rehash_registration(self, username: str, key_hash: str) -> None:
        sql = "UPDATE registrations SET key_hash = ?, legacy_bcrypt = NULL WHERE username = ?"
        await self._write(lambda conn: conn.execute(sql, (key_hash, username)))
