"""The API suite runs against both stores: every test here once on SQLite, once on a
PostgreSQL database of its own."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend
