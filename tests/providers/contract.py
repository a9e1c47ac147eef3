"""The contract every DNS provider passes; a provider's test module inherits it and adds
only a ``provider`` fixture (opened, serving ``ZONE``) and its own quirks."""

from __future__ import annotations

import pytest

from providers.base import DnsProvider, ZoneNotFoundError

ZONE = "example.test."
NAME = "_acme-challenge.www.example.test."
OTHER = "_acme-challenge.api.example.test."


class ProviderContract:
    async def test_add_is_idempotent(self, provider: DnsProvider):
        await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.add_txt(ZONE, NAME, "one", 60)
        assert await provider.list_txt(ZONE, NAME) == ["one"]

    async def test_two_values_live_on_one_name_at_once(self, provider: DnsProvider):
        await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.add_txt(ZONE, NAME, "two", 60)
        assert sorted(await provider.list_txt(ZONE, NAME)) == ["one", "two"]

    async def test_remove_one_keeps_the_other(self, provider: DnsProvider):
        await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.add_txt(ZONE, NAME, "two", 60)
        await provider.remove_txt(ZONE, NAME, "one")
        assert await provider.list_txt(ZONE, NAME) == ["two"]

    async def test_remove_absent_is_success(self, provider: DnsProvider):
        await provider.remove_txt(ZONE, NAME, "never-added")
        await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.remove_txt(ZONE, NAME, "one")
        await provider.remove_txt(ZONE, NAME, "one")
        assert await provider.list_txt(ZONE, NAME) == []

    async def test_other_names_are_untouched(self, provider: DnsProvider):
        await provider.add_txt(ZONE, OTHER, "keep", 60)
        await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.remove_txt(ZONE, NAME, "one")
        assert await provider.list_txt(ZONE, OTHER) == ["keep"]

    async def test_find_zone_picks_the_zone_containing_the_name(self, provider: DnsProvider):
        assert await provider.find_zone(NAME) == ZONE
        assert await provider.find_zone(ZONE) == ZONE

    async def test_find_zone_outside_every_zone_raises(self, provider: DnsProvider):
        with pytest.raises(ZoneNotFoundError):
            await provider.find_zone("_acme-challenge.example.invalid.")
        with pytest.raises(ZoneNotFoundError):
            await provider.find_zone("notexample.test.")
