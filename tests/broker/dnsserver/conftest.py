from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider, EmbeddedSettings, EmbeddedZone
from tests.broker.dnsserver.support import Client


@pytest.fixture
def provider() -> EmbeddedProvider:
    return EmbeddedProvider("embedded", EmbeddedSettings())


@pytest.fixture
def zone(provider: EmbeddedProvider) -> EmbeddedZone:
    return provider.zone_set.zones()[0]


@pytest.fixture
async def server(provider: EmbeddedProvider) -> AsyncIterator[DnsServer]:
    dns_server = DnsServer(provider.zone_set, [("127.0.0.1", 0)])
    await dns_server.start()
    try:
        yield dns_server
    finally:
        await dns_server.stop()


@pytest.fixture
def client(server: DnsServer) -> Client:
    host, port = server.addresses[0]
    return Client(host, port)
