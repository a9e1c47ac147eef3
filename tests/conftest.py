"""Shared fixtures: a real broker on ephemeral loopback ports (its store SQLite, or
PostgreSQL where a test directory asks for both), and the OpenAPI contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from pydantic import SecretStr

from broker.config import Settings, StoreSettings
from broker.runtime import Broker
from tests.fakes.oidc import LocalIssuer
from tests.peers import PostgresCluster
from tests.process import Served
from tests.providers.aws import MotoServer, create_zone
from tests.support import ROOT, Api, OpenApi, Running, write_settings

StartBroker = Callable[..., Awaitable[Running]]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session, with a migrated template."""
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A database of this test's own, already migrated."""
    return postgres_cluster.new_database()


@pytest.fixture
def store_backend() -> str:
    """Which store the brokers of a test use; tests/broker/api asks for both."""
    return "sqlite"


@pytest.fixture
def store_settings(store_backend: str, request: pytest.FixtureRequest) -> StoreSettings | None:
    """The store every broker of the test uses (None: the one its settings name)."""
    if store_backend == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return StoreSettings(url=SecretStr(url))


@pytest.fixture
async def start_broker(
    tmp_path: Path, store_settings: StoreSettings | None
) -> AsyncIterator[StartBroker]:
    """Start brokers (several, or one restarted, share ``tmp_path`` and the store); all are
    stopped after."""
    started: list[Broker] = []
    session = aiohttp.ClientSession()

    async def start(settings: Settings | None = None) -> Running:
        settings = settings or write_settings(tmp_path)
        if store_settings is not None:
            settings = settings.model_copy(update={"store": store_settings})
        broker = Broker(settings)
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


@pytest.fixture
async def local_issuer() -> AsyncIterator[LocalIssuer]:
    """An OIDC issuer on loopback (discovery, JWKS, RSA and EC keys)."""
    issuer = await LocalIssuer().start()
    try:
        yield issuer
    finally:
        await issuer.stop()


@pytest.fixture
async def moto() -> AsyncIterator[MotoServer]:
    """A local Route53 (moto) holding the zone ``r53.test.`` (API and end-to-end tests)."""
    server = MotoServer()
    await asyncio.to_thread(server.start)
    try:
        create_zone(server, "r53.test.")
        yield server
    finally:
        await asyncio.to_thread(server.stop)
