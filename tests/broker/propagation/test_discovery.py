"""Nameserver discovery through a real recursive resolver (BIND forwarding the test zones
to knot servers on random loopback addresses, all on one port), and the recursive
resolver check with its negative-caching report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from tests.broker.propagation.conftest import MakeChecker, StartKnot, StartNamed
from tests.broker.propagation.servers import (
    Knot,
    Named,
    free_port,
    loopback_addresses,
    zone_file,
)

VALUE = "3S6kP2i1C0AYv5rF5K4bWv2qKzVwJrj5L8yEo1nQd8Y"
EXAMPLE = "example.test."
OTHER = "other.test."
ALIAS_TARGET = "3f2a6c1e.auth.other.test."


@dataclass
class Lab:
    port: int
    example: list[Knot]
    other: Knot
    resolver: Named
    addresses: list[str]


@pytest.fixture
async def lab(start_knot: StartKnot, start_named: StartNamed) -> Lab:
    """example.test. on two knots (ns1, ns2), other.test. on one knot listening on two
    addresses (ns1, ns2 of other.test.), and a BIND resolver forwarding both zones."""
    addresses = loopback_addresses(4)
    port = free_port(addresses)
    ex1, ex2, ot1, ot2 = addresses
    example = zone_file(
        EXAMPLE,
        {"ns1": [ex1], "ns2": [ex2]},
        f"_acme-challenge.www CNAME {ALIAS_TARGET}",
        "deep.sub A 192.0.2.1",
    )
    other = zone_file(OTHER, {"ns1": [ot1], "ns2": [ot2]})
    knots = [await start_knot({EXAMPLE: example}, listen=[(host, port)]) for host in (ex1, ex2)]
    other_knot = await start_knot({OTHER: other}, listen=[(ot1, port), (ot2, port)])
    # named listens only on addresses configured on an interface: 127.0.0.1 here.
    resolver = ("127.0.0.1", free_port(["127.0.0.1"]))
    named = await start_named(resolver, {EXAMPLE: [(ex1, port)], OTHER: [(ot1, port)]})
    return Lab(port, knots, other_knot, named, addresses)


async def test_zone_and_every_nameserver_address_are_found_from_a_deep_name(
    lab: Lab, make_checker: MakeChecker
) -> None:
    checker = make_checker(resolvers=[lab.resolver.server], nameserver_port=lab.port)
    name = "_acme-challenge.a.b.deep.sub.example.test."

    before = await checker.check(name, VALUE)
    for knot in lab.example:
        await knot.add_txt(EXAMPLE, name, VALUE)
    after = await checker.wait(name, VALUE, timeout=10)

    assert before.zone == EXAMPLE
    assert not before.ready
    assert before.error is None
    assert [(s.nameserver, s.address, s.port) for s in before.servers] == [
        ("ns1.example.test.", lab.addresses[0], lab.port),
        ("ns2.example.test.", lab.addresses[1], lab.port),
    ]
    assert after.ready


async def test_cname_is_followed_into_another_zone_whose_servers_are_checked(
    lab: Lab, make_checker: MakeChecker
) -> None:
    checker = make_checker(resolvers=[lab.resolver.server], nameserver_port=lab.port)
    name = "_acme-challenge.www.example.test."

    before = await checker.check(name, VALUE)
    await lab.other.add_txt(OTHER, ALIAS_TARGET, VALUE)
    after = await checker.wait(name, VALUE, timeout=10)

    assert (before.fqdn, before.target, before.zone) == (name, ALIAS_TARGET, OTHER)
    assert not before.ready
    assert [(s.nameserver, s.address) for s in before.servers] == [
        ("ns1.other.test.", lab.addresses[2]),
        ("ns2.other.test.", lab.addresses[3]),
    ]
    assert after.ready
    assert [knot.txt_queries() for knot in lab.example] == [0, 0]


async def test_unknown_zone_is_reported_not_raised(lab: Lab, make_checker: MakeChecker) -> None:
    checker = make_checker(
        resolvers=[lab.resolver.server], nameserver_port=lab.port, query_timeout=0.5
    )
    report = await checker.check("_acme-challenge.nowhere.invalid.", VALUE)
    assert not report.ready
    assert report.zone is None
    assert report.error is not None
    assert report.servers == ()


async def test_resolver_check_reports_seen_and_negative_caching_apart_from_readiness(
    lab: Lab, make_checker: MakeChecker
) -> None:
    checker = make_checker(
        resolvers=[lab.resolver.server],
        check_resolvers=[lab.resolver.server],
        nameserver_port=lab.port,
    )
    asked_early = "_acme-challenge.early.example.test."
    asked_late = "_acme-challenge.late.example.test."
    host, port = lab.resolver.listen
    early = await dns.asyncquery.udp(
        dns.message.make_query(asked_early, "TXT"), host, port=port, timeout=2
    )
    assert early.rcode() == dns.rcode.NXDOMAIN
    for knot in lab.example:
        await knot.add_txt(EXAMPLE, asked_early, VALUE)
        await knot.add_txt(EXAMPLE, asked_late, VALUE)

    cached, fresh = await asyncio.gather(
        checker.wait(asked_early, VALUE, timeout=10), checker.wait(asked_late, VALUE, timeout=10)
    )

    assert cached.ready
    assert fresh.ready
    (stale,) = cached.resolvers
    assert (stale.answered, stale.seen, stale.negative) == (True, False, True)
    assert stale.negative_ttl is not None
    assert 0 < stale.negative_ttl <= 30
    (seeing,) = fresh.resolvers
    assert (seeing.answered, seeing.seen, seeing.negative, seeing.negative_ttl) == (
        True,
        True,
        False,
        None,
    )
    assert cached.to_json()["resolvers"][0]["negative_ttl"] == stale.negative_ttl


async def test_resolvers_are_not_asked_before_the_servers_are_ready(
    lab: Lab, make_checker: MakeChecker
) -> None:
    checker = make_checker(
        resolvers=[lab.resolver.server],
        check_resolvers=[lab.resolver.server],
        nameserver_port=lab.port,
    )
    report = await checker.wait("_acme-challenge.never.example.test.", VALUE, timeout=0.3)
    assert not report.ready
    assert report.resolvers == ()
