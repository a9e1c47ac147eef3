"""Fuzzing the embedded DNS server's packet handling, in process: the responder (the fast
path and the full parse behind it), the signed-message and UPDATE path, and the rate
limiter's truncated reply. Packets are arbitrary bytes, the seed corpus as is, mutated
seeds, and well-formed queries and updates built from random parts.

For every packet: no exception escapes; a reply, if any, is a response (QR set) with the
query's ID; over UDP it keeps to 512 octets without EDNS and to min(client payload, the
server's) with it; and an UPDATE reaches ``apply`` only when its TSIG signature verifies.
"""

from __future__ import annotations

import time

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker.dnsserver.ratelimit import SLIP, RateLimit, RateLimiter
from broker.dnsserver.responder import SIGNED, Responder
from broker.dnsserver.signed import SignedMessages
from broker.dnsserver.wire import truncated_reply
from providers.embedded import EmbeddedProvider, EmbeddedSettings, EmbeddedZone
from providers.embedded import EmbeddedZoneSettings as ZoneSettings
from tests.fuzz import corpus
from tests.fuzz.budget import FUZZ

MAX_UDP_PAYLOAD = 1232
IN, TXT = dns.rdataclass.IN, dns.rdatatype.TXT
SEEDS = corpus.load()
SEED_PACKETS = [SEEDS[name] for name in sorted(SEEDS)]
NAMES = [
    corpus.ZONE,
    corpus.CHALLENGE,
    "nothing.example.test.",
    "ns1.example.test.",
    "foreign.test.",
    "x.foreign.test.",
    "example.com.",
    ".",
]


def _zones() -> tuple[EmbeddedProvider, EmbeddedZone]:
    """example.test with 120 TXT values at the challenge name (an answer larger than any
    UDP limit) and 3 at the apex; foreign.test as an apex-only zone."""
    provider = EmbeddedProvider("embedded", EmbeddedSettings())
    zone = provider.zone_set.zones()[0]
    for index in range(120):
        zone.add_txt(corpus.CHALLENGE, f"value-{index:03d}-" + "v" * 40, 60)
    for index in range(3):
        zone.add_txt(corpus.ZONE, f"apex-{index}", 60)
    return provider, EmbeddedZone(ZoneSettings(name="foreign.test"))


PROVIDER, FOREIGN = _zones()
RESPONDER = Responder(
    PROVIDER.zone_set,
    MAX_UDP_PAYLOAD,
    cache_size=64,
    apex={FOREIGN.origin: FOREIGN},
    signed_elsewhere=True,
)
APPLIED: list[bytes] = []


async def find_key(name: str) -> dns.tsig.Key | None:
    return corpus.KEY if dns.name.from_text(name) == corpus.KEY.name else None


async def apply(message: dns.update.UpdateMessage, key_name: str, source: str) -> dns.rcode.Rcode:
    APPLIED.append(message.to_wire())
    return dns.rcode.NOERROR


SIGNED_MESSAGES = SignedMessages(find_key, apply, RESPONDER.answer, max_udp_payload=MAX_UDP_PAYLOAD)


def udp_limit(query: bytes) -> int:
    """The most a UDP answer to ``query`` may hold: 512 octets when it carries no
    additional record (so no OPT); else as its OPT says, if dnspython can read it;
    else the server's payload."""
    if len(query) < 12 or query[10:12] == b"\0\0":
        return 512
    try:
        message = dns.message.from_wire(query, keyring=False, ignore_trailing=True)
    except Exception:
        return MAX_UDP_PAYLOAD
    if message.edns < 0:
        return 512
    return min(max(message.payload, 512), MAX_UDP_PAYLOAD)


def check_reply(query: bytes, reply: bytes | None, udp: bool) -> None:
    if reply is None:
        return
    assert len(reply) >= 12, reply
    assert reply[:2] == query[:2], "the reply's ID is the query's"
    assert reply[2] & 0x80, "the reply is a response"
    assert len(reply) <= (udp_limit(query) if udp else 65535)


async def answer(packet: bytes, udp: bool) -> bytes | None:
    """What the server sends back for ``packet``, as UdpListener and TcpConnection do."""
    reply = RESPONDER.respond(packet, udp)
    if reply is SIGNED:
        return await SIGNED_MESSAGES(packet, "192.0.2.1", udp)
    return reply


async def assert_handled(packet: bytes) -> None:
    for udp in (True, False):
        check_reply(packet, await answer(packet, udp), udp)
        check_reply(packet, await SIGNED_MESSAGES(packet, "192.0.2.1", udp), udp)
    check_reply(packet, truncated_reply(packet), udp=True)


@pytest.mark.parametrize("name", sorted(SEEDS))
async def test_every_seed_is_answered_within_bounds(name: str) -> None:
    await assert_handled(SEEDS[name])


@FUZZ
@given(st.binary(max_size=700))
@example(b"")
@example(b"\x00" * 12)
@example(b"\xff" * 12)
async def test_arbitrary_bytes(packet: bytes) -> None:
    await assert_handled(packet)


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    """A seed with a few byte edits: overwrite, insert, delete, cut, or a header field
    (flags, counts) set to an arbitrary value."""
    packet = bytearray(draw(st.sampled_from(SEED_PACKETS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["overwrite", "insert", "delete", "cut", "header"]))
        position = draw(st.integers(0, len(packet)))
        if kind == "overwrite" and position < len(packet):
            packet[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            packet[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del packet[position : position + draw(st.integers(1, 16))]
        elif kind == "cut":
            del packet[position:]
        elif kind == "header" and len(packet) >= 12:
            field = draw(st.sampled_from([2, 4, 6, 8, 10]))
            packet[field : field + 2] = draw(st.binary(min_size=2, max_size=2))
    return bytes(packet)


@FUZZ
@given(mutated_seed())
async def test_mutated_seeds(packet: bytes) -> None:
    await assert_handled(packet)


labels = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,63}", fullmatch=True),
    st.binary(min_size=1, max_size=63).map(lambda b: b.decode("latin-1")),
)
names = st.one_of(
    st.sampled_from(NAMES),
    st.builds(lambda prefix, base: f"{prefix}.{base}", labels, st.sampled_from(NAMES[:5])),
)


@st.composite
def built_query(draw: st.DrawFn) -> bytes:
    """A well-formed query from random parts: name, type, class, flags, EDNS and payload."""
    try:
        qname = dns.name.from_text(draw(names))
    except Exception:  # not a name dnspython can write; the bytes fuzz covers those
        qname = dns.name.from_text(corpus.CHALLENGE)
    query = dns.message.make_query(
        qname,
        draw(st.integers(0, 65535)),
        rdclass=draw(st.sampled_from([1, 3, 4, 254, 255, draw(st.integers(0, 65535))])),
        use_edns=draw(st.sampled_from([None, 0, 0, 1])),
        payload=draw(st.integers(0, 65535)),
        id=draw(st.integers(0, 65535)),
    )
    query.flags = draw(st.integers(0, 0xFFFF)) & ~0x8000 & ~0x0F
    return query.to_wire()


@FUZZ
@given(built_query())
async def test_built_queries(packet: bytes) -> None:
    await assert_handled(packet)


@st.composite
def built_update(draw: st.DrawFn) -> tuple[bytes, dns.tsig.Key | None]:
    """An UPDATE of random TXT additions and deletions, signed with the server's key,
    another secret, an unknown key or not at all."""
    update = dns.update.UpdateMessage(draw(st.sampled_from([corpus.ZONE, "foreign.test."])))
    for _ in range(draw(st.integers(0, 4))):
        owner = draw(st.sampled_from(NAMES[:6]))
        if draw(st.booleans()):
            value = draw(st.binary(max_size=255))
            ttl = draw(st.integers(0, 2**31 - 1))
            update.add(owner, ttl, dns.rdtypes.ANY.TXT.TXT(IN, TXT, [value]))
        else:
            update.delete(owner, "TXT")
    key = draw(st.sampled_from([corpus.KEY, corpus.OTHER_KEY, corpus.UNKNOWN_KEY, None]))
    if key is not None:
        update.use_tsig(key)
    update.id = draw(st.integers(0, 65535))
    return update.to_wire(), key


def signed_messages(skew: float) -> SignedMessages:
    """The signed-message path with its clock ``skew`` seconds off."""
    return SignedMessages(
        find_key,
        apply,
        RESPONDER.answer,
        fudge=300,
        clock=lambda: time.time() + skew,
        max_udp_payload=MAX_UDP_PAYLOAD,
    )


skews = st.sampled_from([0.0, 0.0, 250.0, -250.0, 400.0, -(10.0**6)])


@FUZZ
@given(built_update(), skews, st.booleans())
async def test_an_update_is_applied_exactly_when_signed_with_the_key_in_time(
    built: tuple[bytes, dns.tsig.Key | None], skew: float, udp: bool
) -> None:
    packet, key = built
    APPLIED.clear()
    reply = await signed_messages(skew)(packet, "192.0.2.1", udp)
    check_reply(packet, reply, udp)
    assert reply is not None
    assert bool(APPLIED) == (key is corpus.KEY and abs(skew) <= 300)
    assert RESPONDER.respond(packet, udp) is SIGNED


@FUZZ
@given(built_update(), st.data())
async def test_a_mutated_update_reaches_apply_only_with_a_valid_signature(
    built: tuple[bytes, dns.tsig.Key | None], data: st.DataObject
) -> None:
    packet = bytearray(built[0])
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(packet) - 1))
        packet[position] = data.draw(st.integers(0, 255))
    APPLIED.clear()
    for udp in (True, False):
        check_reply(bytes(packet), await SIGNED_MESSAGES(bytes(packet), "192.0.2.1", udp), udp)
    if APPLIED:
        dns.message.from_wire(bytes(packet), keyring=corpus.KEY)  # raises unless it verifies


@FUZZ
@given(st.sampled_from([*SEED_PACKETS, b""]), st.lists(st.integers(0, 2), max_size=40))
def test_a_limited_source_gets_only_minimal_truncated_replies(
    packet: bytes, hosts: list[int]
) -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=0.001, burst=2, slip=1))
    for host in hosts:
        verdict = limiter.check(f"192.0.{host}.1", 0.0)
        if verdict == SLIP:
            reply = truncated_reply(packet)
            check_reply(packet, reply, udp=True)
            if reply is not None:
                assert reply[2] & 0x02, "TC is set"
                assert reply[6:12] == bytes(6), "no answer, authority or additional records"
    assert limiter.dropped == 0
