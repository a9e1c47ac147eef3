"""The schema of the SQL stores, versioned with Alembic: one set of migrations
(``broker/store/migrations/versions``) for SQLite and PostgreSQL, applied when a store
opens and by ``dns01-broker migrate``.

A store reads its version first (one query): at HEAD nothing more happens, so Alembic
(a quarter of a second to import) is loaded only when there is work. An upgrade runs as
one transaction, under a lock that other replicas starting at the same time wait for;
both engines have transactional DDL, so an upgrade cut short leaves the previous schema
as it was. A version this binary does not know was written by a newer broker: refused.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEAD = "0008"
KNOWN = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
LEGACY_SQLITE_VERSION = 1
"""``PRAGMA user_version`` of SQLite files made before migrations: schema 0001."""

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_CLASS_MIGRATION = 20261
"""PostgreSQL advisory lock (class, 0) held by the replica that migrates."""


class SchemaError(Exception):
    """The database's schema cannot be used by this broker; the message says why."""


def needs_upgrade(version: str | None) -> bool:
    """True when ``version`` (None: no schema yet) is older than HEAD; SchemaError when
    it is one this broker does not know."""
    if version == HEAD:
        return False
    if version is None or version in KNOWN:
        return True
    raise SchemaError(
        f"the database's schema version {version} is newer than this dns01-broker knows "
        f"(up to {HEAD}): run a newer dns01-broker against it, or restore a backup made "
        "with this version"
    )


def sqlite_version(path: Path) -> str | None:
    """The schema version of a SQLite file (None when it has no schema)."""
    conn = sqlite3.connect(path)
    try:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            legacy = conn.execute("PRAGMA user_version").fetchone()[0]
            return "0001" if legacy == LEGACY_SQLITE_VERSION else None
        return None if row is None else str(row[0])
    finally:
        conn.close()


def upgrade_sqlite(path: Path) -> None:
    """Upgrade a SQLite file to HEAD (blocking: run it on a thread)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    # pysqlite opens transactions only around DML; take over, so DDL is transactional
    # too and the write lock is held from the start (concurrent starts wait here).
    @event.listens_for(engine, "connect")
    def _autocommit(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as connection:
            legacy = connection.exec_driver_sql("PRAGMA user_version").scalar()
            has_table = connection.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'"
            ).scalar()
            with _alembic(connection) as (config, command):
                if legacy == LEGACY_SQLITE_VERSION and not has_table:
                    command.stamp(config, "0001")
                command.upgrade(config, "head")
    finally:
        engine.dispose()


def upgrade_postgresql(url: str, password: str | None) -> None:
    """Upgrade a PostgreSQL database to HEAD (blocking: run it on a thread)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    target = make_url(url).set(drivername="postgresql+psycopg")
    if password is not None:
        target = target.set(password=password)
    engine = create_engine(target, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_CLASS_MIGRATION}, 0)"))
            with _alembic(connection) as (config, command):
                command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise SchemaError(f"cannot upgrade the schema: {_first_line(exc)}") from None
    finally:
        engine.dispose()


@contextmanager
def _alembic(connection: Any) -> Iterator[tuple[Any, Any]]:
    """Alembic on ``connection``; whatever fails inside is a SchemaError (the transaction
    it runs in is rolled back by the caller's ``engine.begin()``)."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    try:
        yield config, command
        log.info("store schema upgraded to version %s", HEAD)
    except (CommandError, SQLAlchemyError) as exc:
        raise SchemaError(
            f"upgrading the schema to version {HEAD} failed, and nothing of it was kept: "
            f"{_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
