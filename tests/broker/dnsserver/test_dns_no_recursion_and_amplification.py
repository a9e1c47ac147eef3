"""No recursion (names outside the zones are REFUSED, RA never set, nothing forwarded), and
answers over UDP bounded: 512 octets without EDNS, min(client payload, ours) with it,
ANY answered by one HINFO, signed answers too."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest

import broker.dnsserver
from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import CHALLENGE, ZONE, Client

MANY_SHORT = [f"value-{index:03d}-" + "v" * 32 for index in range(300)]
FEW_LONG = [f"{index:02d}-" + "x" * 200 for index in range(4)]  # ~830 octets: > 512, < 1232
KEY = dns.tsig.Key("bench-key.", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "hmac-sha256")


async def add_values(provider: EmbeddedProvider, values: list[str]) -> None:
    for value in values:
        await provider.add_txt(ZONE, CHALLENGE, value, 60)


async def raw(client: Client, query: dns.message.Message) -> bytes:
    reply = await client.raw_udp(query.to_wire(), wait=2.0)
    assert reply is not None
    return reply


@pytest.mark.parametrize(
    "name", ["example.com.", "www.google.com.", ".", "test.", "notexample.test."]
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_recursive_queries_outside_the_zones_are_refused_without_ra(
    client: Client, name: str, transport: str
) -> None:
    query = dns.message.make_query(name, "A")
    assert query.flags & dns.flags.RD
    response = await (client.udp(query) if transport == "udp" else client.tcp(query))
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.RA
    assert not response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD  # echoed, as RFC 1035 says
    assert response.answer == response.authority == response.additional == []


async def test_ra_is_never_set_even_for_names_inside_the_zones(client: Client) -> None:
    for name, rdtype in ((ZONE, "SOA"), (CHALLENGE, "TXT"), ("nothing." + ZONE, "A")):
        for use_edns in (None, 0):
            response = await client.udp(dns.message.make_query(name, rdtype, use_edns=use_edns))
            assert not response.flags & dns.flags.RA


def test_the_dns_server_holds_no_dns_client_to_forward_with() -> None:
    """Recursion needs a way to ask another server: none of the server's modules imports
    one (dns.resolver, dns.query, dns.asyncquery, dns.asyncresolver) or the broker's
    propagation checker."""
    forbidden = {"dns.resolver", "dns.query", "dns.asyncquery", "dns.asyncresolver"}
    package = Path(broker.dnsserver.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name not in forbidden, f"{module.name} imports {name}"
                assert not name.startswith("broker.propagation"), module.name


@pytest.mark.parametrize("values", [MANY_SHORT, FEW_LONG], ids=["300-short", "4-long"])
async def test_udp_answer_without_edns_never_exceeds_512_octets(
    client: Client, provider: EmbeddedProvider, values: list[str]
) -> None:
    await add_values(provider, values)
    reply = await raw(client, dns.message.make_query(CHALLENGE, "TXT"))
    assert len(reply) <= 512
    response = dns.message.from_wire(reply, raise_on_truncation=False)
    assert response.flags & dns.flags.TC
    assert response.answer == []


@pytest.mark.parametrize(
    ("payload", "limit"), [(4096, 1232), (1232, 1232), (800, 800), (100, 512), (512, 512)]
)
async def test_udp_answer_with_edns_stays_within_client_payload_and_ours(
    client: Client, provider: EmbeddedProvider, payload: int, limit: int
) -> None:
    await add_values(provider, MANY_SHORT)
    query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=payload)
    reply = await raw(client, query)
    assert len(reply) <= limit
    assert dns.message.from_wire(reply, raise_on_truncation=False).flags & dns.flags.TC


async def test_an_answer_that_fits_the_edns_payload_is_sent_whole(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, FEW_LONG)
    query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=1232)
    reply = await raw(client, query)
    assert 512 < len(reply) <= 1232
    response = dns.message.from_wire(reply)
    assert not response.flags & dns.flags.TC
    [rrset] = response.answer
    assert len(rrset) == len(FEW_LONG)


async def test_the_server_payload_caps_what_a_client_advertises(
    provider: EmbeddedProvider,
) -> None:
    await add_values(provider, MANY_SHORT)
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], max_udp_payload=600)
    await server.start()
    try:
        client = Client(*server.addresses[0])
        query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0, payload=4096)
        assert len(await raw(client, query)) <= 600
    finally:
        await server.stop()


async def test_any_over_udp_is_one_small_hinfo_whatever_the_name_holds(
    client: Client, provider: EmbeddedProvider
) -> None:
    await add_values(provider, MANY_SHORT)
    for use_edns in (None, 0):
        query = dns.message.make_query(CHALLENGE, "ANY", use_edns=use_edns, payload=4096)
        reply = await raw(client, query)
        response = dns.message.from_wire(reply)
        assert not response.flags & dns.flags.TC
        [rrset] = response.answer
        assert rrset.rdtype == dns.rdatatype.HINFO
        # the answer adds one record of 12 + 9 octets (and the OPT) to the question
        assert len(reply) <= len(query.to_wire()) + 12 + 9 + 11


class OneKey:
    """The signed-message path with one TSIG key; every update is refused."""

    fudge = 300.0

    async def key(self, name: str) -> dns.tsig.Key | None:
        return KEY if dns.name.from_text(name) == KEY.name else None

    async def apply(
        self, message: dns.update.UpdateMessage, key_name: str, source: str
    ) -> dns.rcode.Rcode:
        return dns.rcode.REFUSED

    def report(self, outcome: str) -> None:
        pass

    def refused(self, source: str, key_name: str, why: str) -> None:
        pass


@pytest.fixture
async def signed_client(provider: EmbeddedProvider) -> AsyncIterator[Client]:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], signers=OneKey())
    await server.start()
    try:
        yield Client(*server.addresses[0])
    finally:
        await server.stop()


@pytest.mark.parametrize(("use_edns", "limit"), [(None, 512), (0, 1232)])
async def test_a_signed_answer_over_udp_is_truncated_within_the_limit_and_still_signed(
    signed_client: Client, provider: EmbeddedProvider, use_edns: int | None, limit: int
) -> None:
    await add_values(provider, MANY_SHORT)
    query = dns.message.make_query(CHALLENGE, "TXT", use_edns=use_edns, payload=4096)
    query.use_tsig(KEY)
    reply = await signed_client.raw_udp(query.to_wire(), wait=2.0)
    assert reply is not None
    assert len(reply) <= limit
    response = dns.message.from_wire(
        reply, keyring=KEY, request_mac=query.mac, raise_on_truncation=False
    )
    assert response.had_tsig
    assert response.flags & dns.flags.TC
    assert response.answer == []
    complete = await signed_client.tcp(query)
    assert complete.had_tsig
    [rrset] = complete.answer
    assert len(rrset) == len(MANY_SHORT)
