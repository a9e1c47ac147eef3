"""Hostile or broken answers never raise; the broker's own embedded server works through
``local_nameservers``; ``close()`` ends everything.

Servers answering with garbage cannot be had from knot or BIND, so a few lines of UDP
responder stand in for them: each reply is built from the query it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.flags
import dns.message
import dns.rrset
import pytest

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider, EmbeddedSettings
from tests.broker.propagation.conftest import MakeChecker

ZONE = "example.test."
NAME = "_acme-challenge.www.example.test."
VALUE = "Zq2p6D8f5sV0r4cHn7eJk1Lm3Xy9Tb2Wu6Ao8Pq4Rs0"
Reply = Callable[[bytes], bytes | None]


class Responder(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = self.reply(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


@pytest.fixture
async def responder() -> AsyncIterator[Callable[[Reply], Any]]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(reply: Reply) -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Responder(reply), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"

    try:
        yield start
    finally:
        for transport in transports:
            transport.close()


def answering(build: Callable[[dns.message.Message, dns.message.Message], None]) -> Reply:
    def reply(data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        build(query, response)
        return response.to_wire()

    return reply


def cname_loop(query: dns.message.Message, response: dns.message.Message) -> None:
    name = query.question[0].name
    response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "loop.example.test."))
    response.answer.append(
        dns.rrset.from_text("loop.example.test.", 60, "IN", "CNAME", name.to_text())
    )


def truncated(query: dns.message.Message, response: dns.message.Message) -> None:
    response.flags |= dns.flags.TC


def not_authoritative(query: dns.message.Message, response: dns.message.Message) -> None:
    response.flags &= ~dns.flags.AA


def other_question(query: dns.message.Message, response: dns.message.Message) -> None:
    response.question[0] = dns.rrset.RRset(
        response.question[0].name.parent(), response.question[0].rdclass, 16
    )


async def test_bad_answers_are_reported_per_server_and_never_raised(
    responder: Callable[[Reply], Any], make_checker: MakeChecker
) -> None:
    # The first server that answers at all also serves discovery (no CNAME at NAME).
    servers = [
        await responder(answering(not_authoritative)),
        await responder(lambda data: data[:2] + b"\x84\x00garbage"),
        await responder(lambda data: b"\x00"),
        await responder(answering(cname_loop)),
        await responder(answering(truncated)),
        await responder(answering(other_question)),
        await responder(lambda data: None),
    ]
    checker = make_checker(nameservers={ZONE: servers}, query_timeout=0.3)

    report = await checker.check(NAME, VALUE)

    assert not report.ready
    assert report.error is None
    errors = [server.error or "" for server in report.servers]
    assert errors[0] == "not authoritative (AA not set)"
    assert errors[1].startswith("UDP malformed response")
    assert errors[2].startswith("UDP malformed response")
    assert (report.servers[3].answered, report.servers[3].seen, errors[3]) == (True, False, "")
    assert errors[4] == "TCP connection refused"
    assert errors[5].startswith("UDP malformed response")
    assert errors[6] == "UDP timeout after 0.3 s"


async def test_names_that_are_not_domain_names_are_reported(make_checker: MakeChecker) -> None:
    checker = make_checker(nameservers={ZONE: ["127.0.0.1:9"]})
    report = await checker.wait("a..example.test.", VALUE, timeout=5)
    assert not report.ready
    assert report.error is not None
    assert "is not a domain name" in report.error


async def test_embedded_zone_is_checked_through_local_nameservers(
    make_checker: MakeChecker,
) -> None:
    provider = EmbeddedProvider("embedded", EmbeddedSettings())
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)])
    await server.start()
    try:
        checker = make_checker(local_nameservers={ZONE: server.addresses})
        before = await checker.check(NAME, VALUE)
        await provider.add_txt(ZONE, NAME, VALUE, 60)
        after = await checker.wait(NAME, VALUE, timeout=5)
    finally:
        await server.stop()
    assert not before.ready
    assert [(s.answered, s.seen) for s in before.servers] == [(True, False)]
    assert after.ready
    assert after.zone == ZONE


async def test_close_ends_waits_in_flight_and_refuses_new_checks(
    responder: Callable[[Reply], Any], make_checker: MakeChecker
) -> None:
    silent = await responder(lambda data: None)
    checker = make_checker(nameservers={ZONE: [silent]}, query_timeout=30, check_timeout=60)
    waiter = asyncio.create_task(checker.wait(NAME, VALUE, timeout=60))
    await asyncio.sleep(0.1)

    await checker.close()

    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    with pytest.raises(RuntimeError, match="closed"):
        await checker.check(NAME, VALUE)
    await checker.close()


@pytest.mark.parametrize("deadline", [float("nan"), float("inf")])
async def test_a_deadline_that_never_comes_is_refused(
    make_checker: MakeChecker, deadline: float
) -> None:
    """NaN compares false with everything: the loop once never slept and never ended."""
    checker = make_checker(nameservers={ZONE: ["127.0.0.1:9"]})
    with pytest.raises(ValueError, match="finite number of seconds"):
        await checker.wait(NAME, VALUE, timeout=deadline)
