from __future__ import annotations

import logging
import random
import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from providers.embedded import EmbeddedZone
from tests.broker.dnsserver.support import ZONE, Client

QUERY_ID = 0x4A7E
HEADER = struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 0, 0, 0)
QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
FUZZ_SEED = 20240601


def header(qdcount: int = 1, flags: int = 0x0100, arcount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", QUERY_ID, flags, qdcount, 0, 0, arcount)


MALFORMED = {
    "empty": b"",
    "one byte": b"\x12",
    "eleven bytes": HEADER[:11],
    "header without question": HEADER,
    "label length over 63": HEADER + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "label past the end": HEADER + b"\x20abc",
    "missing qtype": HEADER + b"\x03www\x07example\x04test\x00",
    "compression loop": HEADER + b"\xc0\x0c\x00\x01\x00\x01",
    "forward pointer": HEADER + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20,
    "qdcount 0": header(qdcount=0),
    "qdcount 0 with question bytes": header(qdcount=0) + QUESTION,
    "qdcount 2": header(qdcount=2) + QUESTION + QUESTION,
    "qdcount 2 with one question": header(qdcount=2) + QUESTION,
    "name over 255 bytes": HEADER + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
    "trailing junk": HEADER + QUESTION + b"junk",
    "opt announced but missing": header(arcount=1) + QUESTION,
    "truncated opt": header(arcount=1) + QUESTION + b"\x00\x00\x29\x04",
    "opt rdlen past the end": header(arcount=1)
    + QUESTION
    + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x10",
}


def assert_formerr_or_silence(packet: bytes, reply: bytes | None) -> None:
    if reply is None:
        return
    assert reply[:2] == packet[:2]
    response = dns.message.from_wire(reply)
    assert response.flags & dns.flags.QR
    assert response.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("packet", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_query_gets_formerr_or_silence(
    client: Client, packet: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert_formerr_or_silence(packet, await client.raw_udp(packet))
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert (await client.ask(ZONE, "SOA")).rcode() == dns.rcode.NOERROR


async def test_formerr_echoes_the_query_id(client: Client) -> None:
    packet = header(qdcount=2) + QUESTION + QUESTION
    reply = await client.raw_udp(packet)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == QUERY_ID
    assert response.rcode() == dns.rcode.FORMERR


async def test_responses_sent_to_the_server_are_dropped(client: Client) -> None:
    response = dns.message.make_response(dns.message.make_query(ZONE, "SOA"))
    assert await client.raw_udp(response.to_wire()) is None


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY])
async def test_opcode_other_than_query_is_notimp(client: Client, opcode: dns.opcode.Opcode) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    query.set_opcode(opcode)
    response = await client.udp(query)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == opcode
    assert response.id == query.id


async def test_unparsable_query_with_unknown_opcode_is_notimp(client: Client) -> None:
    packet = header(flags=15 << 11) + b"\xff\xff"
    reply = await client.raw_udp(packet)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP


def random_packets(rng: random.Random, count: int) -> list[bytes]:
    valid = dns.message.make_query("_acme-challenge.example.test.", "TXT", use_edns=0).to_wire()
    packets = [rng.randbytes(rng.randrange(0, 80)) for _ in range(count)]
    for _ in range(count):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        packets.append(bytes(mutated[: rng.randrange(12, len(mutated) + 1)]))
    return packets


async def test_random_and_mutated_packets_never_break_the_server(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    packets = random_packets(random.Random(FUZZ_SEED), 300)
    replies = await client.raw_udp_many(packets, wait=0.3)
    sent_ids = {packet[:2] for packet in packets}
    assert replies
    for reply in replies:
        assert reply[:2] in sent_ids
        assert reply[2] & 0x80
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    for _ in range(3):
        assert (await client.ask(ZONE, "SOA")).rcode() == dns.rcode.NOERROR
    assert await client.tcp(dns.message.make_query(ZONE, "NS"))


async def test_unexpected_error_while_answering_is_servfail_and_logged(
    client: Client, zone: EmbeddedZone, caplog: pytest.LogCaptureFixture
) -> None:
    owner = dns.name.from_text("broken.example.test.")
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.CNAME)
    rrset.add(dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.CNAME, b"\xff"))
    zone.add_static(rrset)
    for transport in (client.udp, client.tcp):
        response = await transport(dns.message.make_query(owner, "TXT"))
        assert response.rcode() == dns.rcode.SERVFAIL
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.ERROR]
    assert (await client.ask(ZONE, "SOA")).rcode() == dns.rcode.NOERROR
