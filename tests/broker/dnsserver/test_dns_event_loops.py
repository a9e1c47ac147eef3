from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import dns.message
import dns.opcode
import dns.rcode
import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import CHALLENGE, ZONE, Client


class LoopWithoutReaders(asyncio.SelectorEventLoop):
    """Like Windows' proactor loop: no add_reader, so UDP needs a DatagramProtocol."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


async def serve_and_query(provider: EmbeddedProvider) -> None:
    await provider.add_txt(ZONE, CHALLENGE, "value", 60)
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)])
    await server.start()
    try:
        client = Client(*server.addresses[0])
        mixed = "_ACME-Challenge.www.EXAMPLE.test."
        for use_edns in (None, 0):
            response = await client.ask(mixed, "TXT", use_edns=use_edns)
            assert response.answer[0].name.to_text() == mixed
        assert (await client.ask("missing.example.test.", "A")).rcode() == dns.rcode.NXDOMAIN
        bad = dns.message.make_query(ZONE, "SOA")
        bad.set_opcode(dns.opcode.NOTIFY)
        assert (await client.udp(bad)).rcode() == dns.rcode.NOTIMP
        assert (await client.tcp(dns.message.make_query(ZONE, "SOA"))).answer
    finally:
        await server.stop()


def run_on(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_udp_is_served_through_a_datagram_protocol_on_loops_without_add_reader(
    provider: EmbeddedProvider,
) -> None:
    run_on(LoopWithoutReaders(), serve_and_query(provider))


def test_server_runs_under_uvloop(provider: EmbeddedProvider) -> None:
    uvloop = pytest.importorskip("uvloop")
    run_on(uvloop.new_event_loop(), serve_and_query(provider))
