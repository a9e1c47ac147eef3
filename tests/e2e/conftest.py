"""End-to-end fixtures: a broker on loopback and pebble validating against its DNS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.peers import Pebble
from tests.support import Running


@pytest.fixture
async def pebble(running: Running, tmp_path: Path) -> AsyncIterator[Pebble]:
    assert running.broker.dns_server is not None
    directory = tmp_path / "pebble"
    directory.mkdir()
    ca = Pebble(directory, running.broker.dns_server.addresses[0])
    try:
        await ca.start()
        yield ca
    finally:
        await ca.stop()
