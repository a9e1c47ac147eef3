from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import CHALLENGE, ZONE, Client

LONG_VALUES = [f"{index:02d}-" + "x" * 200 for index in range(40)]


def make_query(use_edns: int | None, payload: int) -> dns.message.Message:
    if use_edns is None:
        return dns.message.make_query(CHALLENGE, "TXT")
    return dns.message.make_query(CHALLENGE, "TXT", use_edns=use_edns, payload=payload)


async def add_values(provider: EmbeddedProvider, values: list[str]) -> None:
    for value in values:
        await provider.add_txt(ZONE, CHALLENGE, value, 60)


async def test_edns_query_gets_opt_with_our_payload_and_no_echoed_options(client: Client) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"clientck")
    query = dns.message.make_query(ZONE, "SOA", use_edns=0, payload=4096, options=[cookie])
    response = await client.udp(query)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.edns == 0
    assert response.payload == 1232
    assert response.options == ()


async def test_query_without_edns_gets_no_opt(client: Client) -> None:
    response = await client.ask(ZONE, "SOA")
    assert response.edns == -1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_edns_version_above_zero_gets_badvers_with_opt(
    client: Client, transport: str
) -> None:
    query = dns.message.make_query(ZONE, "SOA", use_edns=1)
    response = await (client.udp(query) if transport == "udp" else client.tcp(query))
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0
    assert response.answer == []
    assert response.question == query.question


async def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, LONG_VALUES)
    for use_edns in (None, 0):
        query = make_query(use_edns, 4096)
        truncated = await client.udp(query)
        assert truncated.flags & dns.flags.TC
        assert truncated.flags & dns.flags.AA
        assert truncated.question == query.question
        assert truncated.answer == truncated.authority == []
        assert truncated.edns == (0 if use_edns == 0 else -1)
        complete = await client.tcp(query)
        assert not complete.flags & dns.flags.TC
        [rrset] = complete.answer
        assert sorted(b"".join(rdata.strings).decode() for rdata in rrset) == LONG_VALUES


async def test_udp_limit_is_512_without_edns_and_the_client_payload_with_it(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, LONG_VALUES[:4])

    async def truncated(use_edns: int | None, payload: int) -> bool:
        query = make_query(use_edns, payload)
        return bool((await client.udp(query)).flags & dns.flags.TC)

    assert await truncated(None, 0)
    assert not await truncated(0, 1232)
    assert not await truncated(0, 4096)
    assert await truncated(0, 700)
    assert await truncated(0, 100)


async def test_client_payload_below_512_is_treated_as_512(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, LONG_VALUES[:1])
    query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=100)
    response = await client.udp(query)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 1


async def test_max_udp_payload_is_advertised_and_used(provider: EmbeddedProvider) -> None:
    await add_values(provider, LONG_VALUES[:10])
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], max_udp_payload=4096)
    await server.start()
    try:
        client = Client(*server.addresses[0])
        query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=65000)
        response = await client.udp(query)
        assert response.payload == 4096
        assert not response.flags & dns.flags.TC
        assert len(response.answer[0]) == 10
    finally:
        await server.stop()


async def test_truncation_depends_on_each_query_payload_for_the_same_question(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, LONG_VALUES[:4])
    for payload in (4096, 600, 4096, 600):
        query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=payload)
        response = await client.udp(query)
        assert bool(response.flags & dns.flags.TC) == (payload == 600)
        assert response.id == query.id


async def test_negative_answers_carry_opt_when_asked_with_edns(client: Client) -> None:
    response = await client.ask("missing.example.test.", "TXT", use_edns=0)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.edns == 0
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    refused = await client.ask("example.org.", "TXT", use_edns=0)
    assert refused.rcode() == dns.rcode.REFUSED
    assert refused.edns == 0
