"""End-to-end fixtures: a broker on loopback and pebble validating against its DNS; the
same with the CLI pointed at them (``world``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.config import load_settings
from tests.e2e.world import World
from tests.peers import Pebble, free_dns_port, free_port
from tests.support import Running, write_config


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


@pytest.fixture
async def world(start_broker, tmp_path: Path) -> AsyncIterator[World]:
    dns_port, http_port = free_dns_port(), free_port()
    (tmp_path / "pebble").mkdir()
    pebble = Pebble(tmp_path / "pebble", ("127.0.0.1", dns_port))
    await pebble.start()
    try:
        config = write_config(
            tmp_path,
            f'[acme]\ndirectory = "{pebble.url}"\nca_bundle = "{pebble.ca_file}"\n'
            f'passphrase_file = "{tmp_path}/acme.passphrase"\n'
            f'[acme.cas.pebble]\ndirectory = "{pebble.url}"\ntitle = "pebble (test CA)"\n',
        )
        text = config.read_text()
        text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{http_port}"')
        text = text.replace('listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{dns_port}"]')
        config.write_text(text)
        running = await start_broker(load_settings(config, {}))
        yield World(config, pebble, running)
    finally:
        await pebble.stop()
