from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider, EmbeddedZone, EmbeddedZoneSettings
from tests.broker.dnsserver.support import CHALLENGE, ZONE, Client

SOA_TTL = 3600
NEGATIVE_TTL = 60


def txt_values(response: dns.message.Message) -> set[str]:
    return {
        b"".join(rdata.strings).decode()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    }


def assert_negative(response: dns.message.Message, rcode: dns.rcode.Rcode) -> None:
    assert response.rcode() == rcode
    assert response.flags & dns.flags.AA
    assert response.answer == []
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == dns.name.from_text(ZONE)
    assert soa.ttl == min(SOA_TTL, soa[0].minimum) == NEGATIVE_TTL


async def test_apex_soa_is_authoritative_without_recursion_available(client: Client) -> None:
    response = await client.ask(ZONE, "SOA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD
    assert not response.flags & dns.flags.RA
    [soa] = response.answer
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == SOA_TTL
    assert soa[0].mname == dns.name.from_text("ns1.example.test.")


async def test_rd_clear_in_query_stays_clear_in_answer(client: Client) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    query.flags &= ~dns.flags.RD
    response = await client.udp(query)
    assert not response.flags & dns.flags.RD
    assert response.flags & dns.flags.AA


async def test_apex_ns_and_in_zone_glue_are_served(client: Client) -> None:
    ns = await client.ask(ZONE, "NS")
    assert ns.flags & dns.flags.AA
    assert [rdata.target.to_text() for rdata in ns.answer[0]] == ["ns1.example.test."]
    glue = await client.ask("ns1.example.test.", "A")
    assert [rdata.address for rdata in glue.answer[0]] == ["127.0.0.1"]


async def test_txt_with_two_values_answers_both_records(
    client: Client, provider: EmbeddedProvider
) -> None:
    await provider.add_txt(ZONE, CHALLENGE, "first-value", 120)
    await provider.add_txt(ZONE, CHALLENGE, "second-value", 120)
    response = await client.ask(CHALLENGE, "TXT")
    assert response.flags & dns.flags.AA
    [rrset] = response.answer
    assert len(rrset) == 2
    assert rrset.ttl == 120
    assert txt_values(response) == {"first-value", "second-value"}


async def test_existing_name_without_the_type_is_nodata_with_soa(
    client: Client, provider: EmbeddedProvider
) -> None:
    await provider.add_txt(ZONE, CHALLENGE, "value", 60)
    assert_negative(await client.ask(CHALLENGE, "A"), dns.rcode.NOERROR)


async def test_missing_name_is_nxdomain_with_soa(client: Client) -> None:
    assert_negative(await client.ask("missing.example.test.", "TXT"), dns.rcode.NXDOMAIN)


async def test_empty_non_terminal_is_nodata_not_nxdomain(
    client: Client, provider: EmbeddedProvider
) -> None:
    await provider.add_txt(ZONE, "_acme-challenge.a.b.example.test.", "value", 60)
    assert_negative(await client.ask("b.example.test.", "TXT"), dns.rcode.NOERROR)
    assert_negative(await client.ask("a.b.example.test.", "A"), dns.rcode.NOERROR)
    assert_negative(await client.ask("c.b.example.test.", "A"), dns.rcode.NXDOMAIN)


async def test_name_outside_every_zone_is_refused_without_aa(client: Client) -> None:
    for name in ("example.org.", "test.", "."):
        response = await client.ask(name, "SOA")
        assert response.rcode() == dns.rcode.REFUSED
        assert not response.flags & dns.flags.AA
        assert response.answer == response.authority == []


async def test_letter_case_of_query_is_kept_in_question_and_answer(
    client: Client, provider: EmbeddedProvider
) -> None:
    await provider.add_txt(ZONE, CHALLENGE, "value", 60)
    mixed = "_ACME-challenge.WWW.example.test."
    for _ in range(2):
        for response in (
            await client.ask(mixed, "TXT"),
            await client.ask(mixed, "TXT", use_edns=0),
            await client.tcp(dns.message.make_query(mixed, "TXT")),
        ):
            assert response.question[0].name.to_text() == mixed
            assert [rrset.name.to_text() for rrset in response.answer] == [mixed]
            assert txt_values(response) == {"value"}


async def test_answers_follow_txt_add_and_remove(
    client: Client, provider: EmbeddedProvider
) -> None:
    assert (await client.ask(CHALLENGE, "TXT")).rcode() == dns.rcode.NXDOMAIN
    await provider.add_txt(ZONE, CHALLENGE, "one", 60)
    assert txt_values(await client.ask(CHALLENGE, "TXT")) == {"one"}
    await provider.add_txt(ZONE, CHALLENGE, "two", 60)
    assert txt_values(await client.ask(CHALLENGE, "TXT")) == {"one", "two"}
    await provider.remove_txt(ZONE, CHALLENGE, "one")
    assert txt_values(await client.ask(CHALLENGE, "TXT")) == {"two"}
    await provider.remove_txt(ZONE, CHALLENGE, "two")
    assert (await client.ask(CHALLENGE, "TXT")).rcode() == dns.rcode.NXDOMAIN


async def test_soa_serial_in_answers_follows_changes(
    client: Client, provider: EmbeddedProvider
) -> None:
    before = (await client.ask(ZONE, "SOA")).answer[0][0].serial
    await provider.add_txt(ZONE, CHALLENGE, "value", 60)
    after = (await client.ask(ZONE, "SOA")).answer[0][0].serial
    assert after == (before + 1) & 0xFFFFFFFF


def add_cname(zone: EmbeddedZone, owner: str, target: str) -> None:
    rrset = dns.rrset.from_text(owner, 300, "IN", "CNAME", target)
    zone.add_static(rrset)


async def test_cname_is_answered_with_the_in_zone_target_records(
    client: Client, provider: EmbeddedProvider, zone: EmbeddedZone
) -> None:
    await provider.add_txt(ZONE, "target.example.test.", "delegated", 60)
    add_cname(zone, CHALLENGE, "target.example.test.")
    response = await client.ask(CHALLENGE, "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    cname, txt = response.answer
    assert cname.rdtype == dns.rdatatype.CNAME
    assert cname[0].target == dns.name.from_text("target.example.test.")
    assert txt.name == dns.name.from_text("target.example.test.")
    assert txt_values(response) == {"delegated"}


async def test_cname_query_returns_only_the_cname(client: Client, zone: EmbeddedZone) -> None:
    add_cname(zone, CHALLENGE, "target.example.test.")
    response = await client.ask(CHALLENGE, "CNAME")
    [cname] = response.answer
    assert cname.rdtype == dns.rdatatype.CNAME


async def test_cname_to_another_zone_is_answered_alone(client: Client, zone: EmbeddedZone) -> None:
    add_cname(zone, CHALLENGE, "_acme-challenge.example.org.")
    response = await client.ask(CHALLENGE, "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]


async def test_cname_to_missing_in_zone_name_is_nxdomain_with_the_cname(
    client: Client, zone: EmbeddedZone
) -> None:
    add_cname(zone, CHALLENGE, "gone.example.test.")
    response = await client.ask(CHALLENGE, "TXT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_cname_loops_are_not_followed(client: Client, zone: EmbeddedZone) -> None:
    add_cname(zone, "a.example.test.", "b.example.test.")
    add_cname(zone, "b.example.test.", "a.example.test.")
    add_cname(zone, "self.example.test.", "self.example.test.")
    first = await client.ask("a.example.test.", "TXT")
    assert [rrset.name.to_text() for rrset in first.answer] == ["a.example.test."]
    own = await client.ask("self.example.test.", "TXT")
    assert [rrset.rdtype for rrset in own.answer] == [dns.rdatatype.CNAME]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_any_is_answered_with_one_rfc8482_hinfo(
    client: Client, provider: EmbeddedProvider, transport: str
) -> None:
    await provider.add_txt(ZONE, ZONE, "apex-value", 60)
    send = client.udp if transport == "udp" else client.tcp
    for name in (ZONE, "ns1.example.test."):
        response = await send(dns.message.make_query(name, "ANY"))
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        [rrset] = response.answer
        assert (rrset.name, rrset.rdtype) == (dns.name.from_text(name), dns.rdatatype.HINFO)
        assert [(r.cpu, r.os) for r in rrset] == [(b"RFC8482", b"")]
    assert_negative(await client.ask("nothing.example.test.", "ANY"), dns.rcode.NXDOMAIN)


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
async def test_zone_transfers_are_refused(client: Client, rdtype: str) -> None:
    response = await client.tcp(dns.message.make_query(ZONE, rdtype))
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


async def test_classes_other_than_in_and_any_are_refused(client: Client) -> None:
    chaos = await client.udp(dns.message.make_query(ZONE, "SOA", rdclass=dns.rdataclass.CH))
    assert chaos.rcode() == dns.rcode.REFUSED
    any_class = await client.udp(dns.message.make_query(ZONE, "SOA", rdclass=dns.rdataclass.ANY))
    assert any_class.rcode() == dns.rcode.NOERROR
    assert any_class.answer[0].rdtype == dns.rdatatype.SOA


async def test_query_counts_are_kept_per_transport_and_rcode(
    client: Client, server: DnsServer
) -> None:
    await client.ask(ZONE, "SOA")
    await client.ask("missing.example.test.", "A")
    await client.ask("example.org.", "A")
    await client.tcp(dns.message.make_query(ZONE, "NS"))
    counts = server.query_counts()
    assert counts["udp", "NOERROR"] == 1
    assert counts["udp", "NXDOMAIN"] == 1
    assert counts["udp", "REFUSED"] == 1
    assert counts["tcp", "NOERROR"] == 1
    assert counts["tcp", "FORMERR"] == 0


async def test_a_zone_held_elsewhere_is_answered_at_its_apex_only(
    provider: EmbeddedProvider,
) -> None:
    """Zones other providers hold (for RFC 2136 clients finding the server by SOA): SOA
    and NS at the apex, "no SOA here" below it, nothing else."""
    foreign = EmbeddedZone(EmbeddedZoneSettings(name="r53.test"))
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], apex_zones=[foreign])
    await server.start()
    try:
        client = Client(*server.addresses[0])
        soa = await client.ask("r53.test.", "SOA")
        assert (soa.rcode(), bool(soa.flags & dns.flags.AA)) == (dns.rcode.NOERROR, True)
        assert soa.answer[0].rdtype == dns.rdatatype.SOA
        assert (await client.ask("R53.test.", "NS")).answer[0].rdtype == dns.rdatatype.NS
        below = await client.ask("_acme-challenge.www.r53.test.", "SOA")
        assert (below.rcode(), below.answer) == (dns.rcode.NOERROR, [])
        assert below.authority[0].name == dns.name.from_text("r53.test.")
        for name, rdtype in (("_acme-challenge.www.r53.test.", "TXT"), ("other.test.", "SOA")):
            assert (await client.ask(name, rdtype)).rcode() == dns.rcode.REFUSED
        assert (await client.ask(CHALLENGE, "TXT")).rcode() == dns.rcode.NXDOMAIN  # unchanged
    finally:
        await server.stop()
