from __future__ import annotations

import asyncio
import os
import socket

import dns.message
import dns.rcode
import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import ZONE, Client


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_port_zero_binds_the_same_port_for_udp_and_tcp(server: DnsServer) -> None:
    [(host, port)] = server.addresses
    assert host == "127.0.0.1"
    assert port > 0
    client = Client(host, port)
    assert (await client.ask(ZONE, "SOA")).rcode() == dns.rcode.NOERROR
    assert (await client.tcp(dns.message.make_query(ZONE, "SOA"))).rcode() == dns.rcode.NOERROR


async def test_ipv6_loopback_is_served_over_udp_and_tcp(provider: EmbeddedProvider) -> None:
    if not ipv6_loopback_available():
        if os.environ.get("CI") == "true":
            pytest.fail("::1 is unavailable, and CI=true requires the IPv6 test to run")
        pytest.skip("::1 is unavailable on this host")
    server = DnsServer(provider.zone_set, [("::1", 0), ("127.0.0.1", 0)])
    await server.start()
    try:
        (host, port), (_, other_port) = server.addresses
        assert host == "::1"
        assert other_port > 0
        client = Client(host, port)
        assert (await client.ask(ZONE, "SOA")).answer
        assert (await client.tcp(dns.message.make_query(ZONE, "NS"))).answer
    finally:
        await server.stop()


async def test_every_listen_address_answers(provider: EmbeddedProvider) -> None:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0), ("127.0.0.1", 0)])
    await server.start()
    try:
        first, second = server.addresses
        assert first != second
        for address in server.addresses:
            assert (await Client(*address).ask(ZONE, "SOA")).answer
    finally:
        await server.stop()


async def test_stop_closes_listeners_and_open_connections_and_is_idempotent(
    provider: EmbeddedProvider,
) -> None:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)])
    await server.start()
    host, port = server.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await server.stop()
        assert await asyncio.wait_for(reader.read(1), 2) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    await server.stop()
    assert server.addresses == []
    assert await Client(host, port).raw_udp(dns.message.make_query(ZONE, "SOA").to_wire()) is None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)


async def test_stop_before_start_is_harmless(provider: EmbeddedProvider) -> None:
    await DnsServer(provider.zone_set, [("127.0.0.1", 0)]).stop()


async def test_port_taken_for_tcp_fails_start_without_leaking_the_udp_socket(
    provider: EmbeddedProvider,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = DnsServer(provider.zone_set, [("127.0.0.1", 0), ("127.0.0.1", port)])
        with pytest.raises(OSError):
            await server.start()
        assert server.addresses == []


async def test_starting_a_running_server_again_is_an_error(server: DnsServer) -> None:
    with pytest.raises(RuntimeError):
        await server.start()


@pytest.mark.parametrize(
    "options",
    [
        {"max_udp_payload": 511},
        {"tcp_idle_timeout": 0},
        {"max_tcp_connections": 0},
        {"answer_cache_size": 0},
    ],
)
async def test_invalid_limits_are_rejected(
    provider: EmbeddedProvider, options: dict[str, float]
) -> None:
    with pytest.raises(ValueError, match="DnsServer"):
        DnsServer(provider.zone_set, [("127.0.0.1", 0)], **options)  # type: ignore[arg-type]


async def test_small_answer_cache_keeps_answers_right(provider: EmbeddedProvider) -> None:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], answer_cache_size=3)
    await server.start()
    try:
        client = Client(*server.addresses[0])
        for round_ in range(3):
            for index in range(10):
                response = await client.ask(f"name{index}.example.test.", "TXT")
                assert response.rcode() == dns.rcode.NXDOMAIN, round_
        await provider.add_txt(ZONE, "name3.example.test.", "value", 60)
        assert (await client.ask("name3.example.test.", "TXT")).answer
    finally:
        await server.stop()
