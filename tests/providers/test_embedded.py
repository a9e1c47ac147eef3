"""The embedded provider: the contract, and the zone content it hands the DNS server."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import pytest

from providers.base import ZoneNotFoundError
from providers.embedded import (
    EmbeddedProvider,
    EmbeddedSettings,
    EmbeddedZoneSettings,
    NameserverSettings,
    ZoneSet,
)
from tests.providers.contract import NAME, ZONE, ProviderContract


@pytest.fixture
def provider() -> EmbeddedProvider:
    settings = EmbeddedSettings(
        zones=[
            EmbeddedZoneSettings(name="example.test"),
            EmbeddedZoneSettings(name="sub.example.test"),
        ]
    )
    return EmbeddedProvider("embedded", settings)


class TestEmbeddedContract(ProviderContract):
    async def test_most_specific_zone_wins(self, provider: EmbeddedProvider):
        assert (
            await provider.find_zone("_acme-challenge.a.sub.example.test.") == "sub.example.test."
        )

    async def test_writing_to_a_zone_it_does_not_serve_raises(self, provider: EmbeddedProvider):
        with pytest.raises(ZoneNotFoundError):
            await provider.add_txt("other.test.", "_acme-challenge.other.test.", "x", 60)


async def test_changes_bump_the_serial_and_notify_subscribers(provider: EmbeddedProvider):
    seen: list[int] = []
    provider.zone_set.subscribe(lambda: seen.append(1))
    zone = provider.zone_set.find(dns.name.from_text(NAME))
    assert zone is not None
    serial = zone.serial
    await provider.add_txt(ZONE, NAME, "one", 60)
    await provider.add_txt(ZONE, NAME, "one", 60)  # no change, no notification
    await provider.remove_txt(ZONE, NAME, "one")
    assert len(seen) == 2
    assert zone.serial == serial + 2
    assert zone.soa()[0].serial == serial + 2


async def test_empty_non_terminals_exist_while_a_descendant_does(provider: EmbeddedProvider):
    zone = provider.zone_set.find(dns.name.from_text(ZONE))
    assert zone is not None
    deep = "_acme-challenge.a.b.example.test."
    await provider.add_txt(ZONE, deep, "one", 60)
    assert zone.exists(dns.name.from_text("b.example.test."))
    assert zone.node(dns.name.from_text("b.example.test.")) is None
    await provider.remove_txt(ZONE, deep, "one")
    assert not zone.exists(dns.name.from_text("b.example.test."))
    assert zone.exists(dns.name.from_text(ZONE))


def test_nameservers_inside_the_zone_get_glue_and_outside_do_not():
    settings = EmbeddedSettings(
        zones=[
            EmbeddedZoneSettings(
                name="acme.internal",
                nameservers=[
                    NameserverSettings(name="ns1.acme.internal", addresses=["127.0.0.1", "::1"]),
                    NameserverSettings(name="ns.elsewhere.test", addresses=["192.0.2.1"]),
                ],
            )
        ]
    )
    zone_set = ZoneSet()
    EmbeddedProvider("dev", settings, zone_set)
    zone = zone_set.find(dns.name.from_text("acme.internal."))
    assert zone is not None
    apex = zone.node(zone.origin)
    assert apex is not None
    assert sorted(str(r) for r in apex.rrsets[dns.rdatatype.NS]) == [
        "ns.elsewhere.test.",
        "ns1.acme.internal.",
    ]
    glue = zone.node(dns.name.from_text("ns1.acme.internal."))
    assert glue is not None
    assert set(glue.rrsets) == {dns.rdatatype.A, dns.rdatatype.AAAA}
    assert zone.node(dns.name.from_text("ns.elsewhere.test.")) is None
    assert str(zone.soa()[0].mname) == "ns1.acme.internal."


async def test_a_reserved_name_exists_without_records_until_released(provider: EmbeddedProvider):
    zone = provider.zone_set.find(dns.name.from_text(ZONE))
    assert zone is not None
    name = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."
    zone.reserve(name)
    assert zone.exists(dns.name.from_text(name))
    assert zone.exists(dns.name.from_text("auth.example.test."))
    assert zone.node(dns.name.from_text(name)) is None
    await provider.add_txt(ZONE, name, "value", 60)
    await provider.remove_txt(ZONE, name, "value")
    assert zone.exists(dns.name.from_text(name))
    zone.release(name)
    assert not zone.exists(dns.name.from_text(name))
