"""Shared fixtures: a real broker on ephemeral loopback ports, and the OpenAPI contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from broker.config import Settings
from broker.runtime import Broker
from tests.process import Served
from tests.support import ROOT, Api, OpenApi, Running, write_settings

StartBroker = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_broker(tmp_path: Path) -> AsyncIterator[StartBroker]:
    """Start brokers (several, or one restarted, share ``tmp_path``); all are stopped after."""
    started: list[Broker] = []
    session = aiohttp.ClientSession()

    async def start(settings: Settings | None = None) -> Running:
        broker = Broker(settings or write_settings(tmp_path))
        await broker.start()
        started.append(broker)
        return Running(broker, session, tmp_path)

    try:
        yield start
    finally:
        for broker in reversed(started):
            await broker.stop()
        await session.close()


@pytest.fixture
async def running(start_broker: StartBroker) -> Running:
    return await start_broker()


@pytest.fixture(scope="session")
def openapi() -> OpenApi:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    return OpenApi(spec)


@pytest.fixture
def api(running: Running, openapi: OpenApi) -> Api:
    return Api(running, openapi)


@pytest.fixture
async def serve() -> AsyncIterator[list[Served]]:
    """``dns01-broker serve`` processes started with ``tests.process.start``; killed after."""
    served: list[Served] = []
    yield served
    for item in served:
        if item.process.returncode is None:
            item.process.kill()
            await item.process.wait()
