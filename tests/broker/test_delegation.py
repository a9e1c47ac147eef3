"""CNAME delegation lookups: in memory for the broker's zones, DNS for the rest."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import dns.name
import dns.rrset
import pytest

from broker.delegation import DelegationResolver
from broker.dnsserver import DnsServer
from broker.errors import DnsLookupError, NoZoneError
from providers.embedded import (
    EmbeddedProvider,
    EmbeddedSettings,
    EmbeddedZoneSettings,
    ZoneSet,
)

TARGET = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."


def zones(*names: str) -> ZoneSet:
    zone_set = ZoneSet()
    EmbeddedProvider(
        "p", EmbeddedSettings(zones=[EmbeddedZoneSettings(name=n) for n in names]), zone_set
    )
    return zone_set


def cname(zone_set: ZoneSet, name: str, target: str) -> None:
    zone = zone_set.find(dns.name.from_text(name))
    assert zone is not None
    zone.add_static(dns.rrset.from_text(name, 300, "IN", "CNAME", target))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[ZoneSet, DnsServer]]:
    """Someone else's authoritative server for example.org, on loopback."""
    zone_set = zones("example.org")
    server = DnsServer(zone_set, [("127.0.0.1", 0)])
    await server.start()
    yield zone_set, server
    await server.stop()


async def test_names_in_the_brokers_zones_are_followed_in_memory():
    own = zones("example.test")
    cname(own, "_acme-challenge.app.example.test.", TARGET)
    resolver = DelegationResolver(own, lambda: ["example.test."], resolvers=[("127.0.0.1", 9)])
    assert await resolver.target("_acme-challenge.app.example.test.") == TARGET
    assert (
        await resolver.target("_acme-challenge.www.example.test.")
        == "_acme-challenge.www.example.test."
    )


async def test_names_elsewhere_are_looked_up_in_dns_and_cached(elsewhere):
    remote, server = elsewhere
    cname(remote, "_acme-challenge.example.org.", TARGET)
    clock = Clock()
    resolver = DelegationResolver(
        zones("example.test"),
        lambda: ["example.test."],
        resolvers=server.addresses,
        clock=clock,
    )
    assert await resolver.target("_acme-challenge.example.org.") == TARGET
    assert await resolver.target("_acme-challenge.nothing.example.org.") == (
        "_acme-challenge.nothing.example.org."
    )
    await server.stop()
    assert await resolver.target("_acme-challenge.example.org.") == TARGET  # from the cache
    clock.now += 31
    with pytest.raises(DnsLookupError, match=r"_acme-challenge\.example\.org"):
        await resolver.target("_acme-challenge.example.org.")


async def test_names_in_another_providers_zone_are_taken_as_they_are():
    resolver = DelegationResolver(
        zones("example.test"),
        lambda: ["example.test.", "example.net."],
        resolvers=[("127.0.0.1", 9)],
    )
    assert await resolver.target("_acme-challenge.example.net.") == "_acme-challenge.example.net."


async def test_chains_are_followed_across_servers_and_loops_refused(elsewhere):
    remote, server = elsewhere
    own = zones("example.test")
    cname(remote, "_acme-challenge.example.org.", "hop.example.test.")
    cname(own, "hop.example.test.", TARGET)
    resolver = DelegationResolver(own, lambda: ["example.test."], resolvers=server.addresses)
    assert await resolver.target("_acme-challenge.example.org.") == TARGET
    cname(own, "a.example.test.", "b.example.test.")
    cname(own, "b.example.test.", "a.example.test.")
    with pytest.raises(NoZoneError, match="loops"):
        await resolver.target("a.example.test.")


async def test_an_unreachable_resolver_is_a_retryable_lookup_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = DelegationResolver(
        zones("example.test"),
        lambda: ["example.test."],
        resolvers=[("127.0.0.1", port)],
        timeout=0.3,
    )
    with pytest.raises(DnsLookupError) as caught:
        await resolver.target("_acme-challenge.example.org.")
    assert caught.value.is_retryable
