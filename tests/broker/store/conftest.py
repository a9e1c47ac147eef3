"""The store each test here runs against: SQLite, then PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.store import Store
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "broker.db")
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"), None)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
