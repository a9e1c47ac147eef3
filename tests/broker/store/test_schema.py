"""Schema versions: a store opens at HEAD whatever it starts from, refuses a database a
newer broker wrote, and an upgrade that fails half-way leaves the old schema working."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from broker.errors import StoreUnavailableError
from broker.store import Store
from broker.store import schema as schema_module
from broker.store.postgres import PostgresStore
from broker.store.schema import HEAD
from broker.store.sqlite import SqliteStore
from tests.process import cli
from tests.support import write_config

# The schema SQLite brokers made before migrations existed (PRAGMA user_version 1).
LEGACY_SQLITE = """
CREATE TABLE tokens (key TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL,
    scopes TEXT NOT NULL, cidrs TEXT NOT NULL, admin INTEGER NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE challenges (id TEXT PRIMARY KEY, fqdn TEXT NOT NULL, value TEXT NOT NULL,
    zone TEXT NOT NULL, provider TEXT NOT NULL, owner TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL, state TEXT NOT NULL, ended_at REAL,
    delegated_from TEXT);
CREATE UNIQUE INDEX challenges_live ON challenges (fqdn, value) WHERE state = 'present';
CREATE INDEX challenges_due ON challenges (expires_at) WHERE state = 'present';
CREATE INDEX challenges_ended ON challenges (ended_at) WHERE state != 'present';
CREATE TABLE registrations (username TEXT PRIMARY KEY, subdomain TEXT NOT NULL UNIQUE,
    key_hash TEXT, legacy_bcrypt TEXT, allowfrom TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE acme_accounts (directory TEXT PRIMARY KEY, url TEXT NOT NULL,
    key_pem TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE certificate_orders (id TEXT PRIMARY KEY, owner TEXT NOT NULL,
    names TEXT NOT NULL, csr_pem TEXT NOT NULL, directory TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    fullchain_pem TEXT, error TEXT);
CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
"""

BROKEN_REVISION = '''"""Half-way through it fails.

Revision ID: 9999
"""

from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE half_way (x INTEGER)")
    op.execute("INSERT INTO half_way VALUES (1)")
    op.execute("SELECT no_such_column FROM half_way")
'''


async def test_a_sqlite_file_from_before_migrations_is_adopted_and_keeps_its_data(
    tmp_path: Path,
):
    path = tmp_path / "broker.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_SQLITE)
        conn.execute(
            "INSERT INTO tokens VALUES ('0123456789abcdef', 'admin', 'd', '[]', '[]', 1, 1, "
            "NULL, NULL)"
        )
    store = SqliteStore(path)
    await store.open()
    try:
        assert [t.name for t in await store.list_tokens()] == ["admin"]
        assert await store.report("none") is None  # a table of 0002
        assert schema_module.sqlite_version(path) == HEAD
    finally:
        await store.close()


async def test_a_sqlite_database_newer_than_the_broker_is_refused(tmp_path: Path):
    store = SqliteStore(tmp_path / "broker.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9998'")
    with pytest.raises(StoreUnavailableError, match="newer than this dns01-broker"):
        await SqliteStore(tmp_path / "broker.db").open()


async def test_a_postgresql_database_newer_than_the_broker_is_refused(postgres_url: str):
    connection = await asyncpg.connect(postgres_url)
    await connection.execute("UPDATE alembic_version SET version_num = '9998'")
    await connection.close()
    with pytest.raises(StoreUnavailableError, match="schema version 9998 is newer"):
        await PostgresStore(postgres_url, None).open()


@pytest.fixture
def broken_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real migrations and one more that fails after writing half of itself."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema_module.MIGRATIONS, copy)
    (copy / "versions" / "9999_broken.py").write_text(BROKEN_REVISION.replace("{head}", HEAD))
    monkeypatch.setattr(schema_module, "MIGRATIONS", copy)
    monkeypatch.setattr(schema_module, "HEAD", "9999")
    monkeypatch.setattr(schema_module, "KNOWN", (*schema_module.KNOWN, "9999"))


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_an_upgrade_that_fails_half_way_leaves_the_old_schema_working(
    tmp_path: Path,
    engine: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
):
    make: Callable[[], Store]
    if engine == "sqlite":
        path = tmp_path / "broker.db"
        make = lambda: SqliteStore(path)  # noqa: E731
    else:
        url: str = request.getfixturevalue("postgres_url")
        make = lambda: PostgresStore(url, None)  # noqa: E731
    first = make()
    await first.open()
    await first.put_report("before", "{}", time.time())
    await first.close()

    request.getfixturevalue("broken_migrations")
    with pytest.raises(StoreUnavailableError, match="no_such_column"):
        await make().open()
    monkeypatch.undo()

    store = make()
    await store.open()
    try:
        assert await store.report("before") == "{}"
        with pytest.raises(StoreUnavailableError, match="half_way"):
            await store._select("SELECT x FROM half_way")
    finally:
        await store.close()


async def test_migrate_brings_a_new_store_to_head_and_says_so(tmp_path: Path):
    config = write_config(tmp_path, state="var")
    code, out, err = await cli("--config", str(config), "migrate")
    assert code == 0, err
    assert out.strip() == f"store sqlite {tmp_path / 'var' / 'broker.db'}: schema at version {HEAD}"
    assert schema_module.sqlite_version(tmp_path / "var" / "broker.db") == HEAD
