"""ACME client fixtures: pebble validating dns-01 against a real broker's embedded DNS,
accounts at it, and a BrokerApiSolver with a token scoped to example.test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.acme import AcmeClient, BrokerApiSolver, KeyType, generate_account_key, transport
from tests.broker.acme.ariproxy import AriProxy
from tests.peers import Pebble
from tests.support import Running

MakeClient = Callable[..., Awaitable[AcmeClient]]


class PebbleStarter:
    """``await start_pebble(env={...}, eab_keys=..., nonce_reject_percent=...)`` starts a
    pebble validating against the broker's DNS; ``env`` adds PEBBLE_* settings (e.g.
    PEBBLE_ALTERNATE_ROOTS). ``default()`` is the one plain pebble of the test."""

    def __init__(self, running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.running = running
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.started: list[Pebble] = []
        self._default: Pebble | None = None

    async def __call__(self, env: dict[str, str] | None = None, **options: Any) -> Pebble:
        for name, value in (env or {}).items():
            self.monkeypatch.setenv(name, value)
        directory = self.tmp_path / f"pebble-{len(self.started)}"
        directory.mkdir()
        assert self.running.broker.dns_server is not None
        ca = Pebble(directory, self.running.broker.dns_server.addresses[0], **options)
        self.started.append(ca)
        await ca.start()
        return ca

    async def default(self) -> Pebble:
        if self._default is None:
            self._default = await self()
        return self._default

    async def stop(self) -> None:
        for ca in reversed(self.started):
            await ca.stop()


@pytest.fixture
async def start_pebble(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PebbleStarter]:
    starter = PebbleStarter(running, tmp_path, monkeypatch)
    try:
        yield starter
    finally:
        await starter.stop()


@pytest.fixture
async def pebble(start_pebble: PebbleStarter) -> Pebble:
    return await start_pebble.default()


@pytest.fixture
async def make_client(start_pebble: PebbleStarter) -> AsyncIterator[MakeClient]:
    """``await make_client(key_type=..., register=True, ca=None, url=None)``: an AcmeClient
    with a new account key at ``ca`` (default: the test's pebble) or at ``url`` (a proxy in
    front of it), registered unless ``register=False``; closed after the test."""
    clients: list[AcmeClient] = []

    async def make(
        key_type: KeyType = KeyType.EC256,
        *,
        register: bool = True,
        ca: Pebble | None = None,
        url: str | None = None,
    ) -> AcmeClient:
        where = ca or await start_pebble.default()
        key = generate_account_key(key_type)
        client = AcmeClient(url or where.url, key, ssl=where.ssl_context())
        clients.append(client)
        if register:
            await client.new_account(contact=["mailto:ops@example.test"])
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def proxy(pebble: Pebble) -> AsyncIterator[AriProxy]:
    """pebble behind the proxy that adds what Debian's pebble lacks (renewalInfo; see
    AriProxy for profiles and rate limits)."""
    ari = AriProxy(pebble)
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


@pytest.fixture
async def client(make_client: MakeClient) -> AcmeClient:
    return await make_client()


@pytest.fixture
async def solver(running: Running) -> AsyncIterator[BrokerApiSolver]:
    token = await running.token("acme", ["example.test", "*.example.test"])
    async with BrokerApiSolver(running.url, token) as api_solver:
        yield api_solver


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the ACME transport asks for (rateLimited retries), granted at once."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        asked.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(transport, "asyncio", SimpleNamespace(sleep=sleep))
    return asked
