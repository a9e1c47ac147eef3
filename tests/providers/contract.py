"""The contract every DNS provider passes; a provider's test module inherits it and adds
only a ``provider`` fixture (opened, serving ``ZONE`` and ``SUBZONE``) and its own
quirks. Providers in front of a service inherit BackendContract and add a ``backend``
fixture too: errors, faults and records the provider does not own."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pytest

from providers.base import (
    DnsProvider,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ZoneNotFoundError,
)

ZONE = "example.test."
SUBZONE = "sub.example.test."
NAME = "_acme-challenge.www.example.test."
OTHER = "_acme-challenge.api.example.test."
DEEP = "_acme-challenge.a.sub.example.test."


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

    async def test_most_specific_zone_wins(self, provider: DnsProvider):
        assert await provider.find_zone(DEEP) == SUBZONE
        assert {ZONE, SUBZONE} <= set(provider.zones())

    async def test_ten_concurrent_adds_keep_every_value(self, provider: DnsProvider):
        values = [f"value-{i}" for i in range(10)]
        await asyncio.gather(*(provider.add_txt(ZONE, NAME, value, 60) for value in values))
        assert sorted(await provider.list_txt(ZONE, NAME)) == values

    async def test_concurrent_adds_and_removes_on_one_name(self, provider: DnsProvider):
        await provider.add_txt(ZONE, NAME, "a", 60)
        await provider.add_txt(ZONE, NAME, "b", 60)
        await asyncio.gather(
            provider.remove_txt(ZONE, NAME, "a"),
            provider.add_txt(ZONE, NAME, "c", 60),
            provider.add_txt(ZONE, OTHER, "d", 60),
            provider.remove_txt(ZONE, NAME, "b"),
        )
        assert await provider.list_txt(ZONE, NAME) == ["c"]
        assert await provider.list_txt(ZONE, OTHER) == ["d"]

    async def test_a_change_can_be_waited_for(self, provider: DnsProvider):
        change = await provider.add_txt(ZONE, NAME, "one", 60)
        await provider.wait_applied(change)
        await provider.wait_applied(await provider.remove_txt(ZONE, NAME, "one"))
        assert await provider.list_txt(ZONE, NAME) == []


class Backend(ABC):
    """The service behind a provider, reached around the provider: records it does not
    own, faults, counts of the changes it received, and more providers on it."""

    refused_name: ClassVar[str] = "_acme-challenge.elsewhere.invalid."
    """A name the backend refuses to hold in ZONE."""
    throttles: ClassVar[bool] = True
    wrong_credentials: dict[str, Any]
    """Settings that make the backend refuse the provider's credentials."""
    unreachable: dict[str, Any]
    """Settings that point the provider at a port where nothing listens."""
    secrets: list[str]
    """Secret texts of those settings, which must never show."""

    @abstractmethod
    async def put_foreign(self, name: str, rdtype: str, values: list[str]) -> None:
        """Write an RRset in ZONE without the provider (TXT values unquoted)."""

    @abstractmethod
    async def read(self, name: str, rdtype: str) -> list[str]:
        """An RRset in ZONE as the backend holds it (TXT values unquoted), sorted."""

    @abstractmethod
    def throttle(self, calls: int) -> None:
        """Throttle the next ``calls`` change requests."""

    @abstractmethod
    def changes_submitted(self) -> int:
        """Change requests (UPDATE messages, change batches) received so far."""

    @abstractmethod
    async def make_provider(self, **settings: Any) -> DnsProvider:
        """Another opened provider on this backend, its settings overridden by ``settings``;
        closed after the test."""


class BackendContract(ProviderContract):
    """The contract for providers in front of a real or faked service: add a ``backend``
    fixture (a Backend) beside ``provider``."""

    async def test_foreign_values_and_records_survive(
        self, provider: DnsProvider, backend: Backend
    ):
        await backend.put_foreign(NAME, "TXT", ["foreign"])
        await backend.put_foreign(NAME, "A", ["192.0.2.1"])
        await backend.put_foreign(OTHER, "TXT", ["other"])
        await provider.add_txt(ZONE, NAME, "one", 60)
        assert sorted(await provider.list_txt(ZONE, NAME)) == ["foreign", "one"]
        await provider.remove_txt(ZONE, NAME, "one")
        assert await backend.read(NAME, "TXT") == ["foreign"]
        assert await backend.read(NAME, "A") == ["192.0.2.1"]
        assert await backend.read(OTHER, "TXT") == ["other"]

    async def test_removing_the_last_value_removes_the_rrset(
        self, provider: DnsProvider, backend: Backend
    ):
        await provider.add_txt(ZONE, NAME, "one", 60)
        assert await backend.read(NAME, "TXT") == ["one"]
        await provider.remove_txt(ZONE, NAME, "one")
        assert await backend.read(NAME, "TXT") == []

    async def test_concurrent_adds_become_one_change(self, provider: DnsProvider, backend: Backend):
        before = backend.changes_submitted()
        values = [f"value-{i}" for i in range(10)]
        await asyncio.gather(*(provider.add_txt(ZONE, NAME, value, 60) for value in values))
        assert backend.changes_submitted() - before == 1
        assert await backend.read(NAME, "TXT") == values

    async def test_values_needing_escapes_or_several_strings_round_trip(
        self, provider: DnsProvider, backend: Backend
    ):
        values = sorted(['say "hi"', "back\\slash", "x" * 300, "semi;colon (paren)"])
        for value in values:
            await provider.add_txt(ZONE, NAME, value, 60)
        assert sorted(await provider.list_txt(ZONE, NAME)) == values
        assert await backend.read(NAME, "TXT") == values
        for value in values:
            await provider.remove_txt(ZONE, NAME, value)
        assert await backend.read(NAME, "TXT") == []

    async def test_wrong_credentials_are_an_auth_error(self, backend: Backend):
        provider = await backend.make_provider(**backend.wrong_credentials)
        with pytest.raises(ProviderAuthError) as raised:
            await provider.check()
        assert not raised.value.retryable
        with pytest.raises(ProviderAuthError):
            await provider.add_txt(ZONE, NAME, "one", 60)

    async def test_secrets_never_show(self, backend: Backend, caplog: pytest.LogCaptureFixture):
        caplog.set_level(logging.DEBUG)
        provider = await backend.make_provider(**backend.wrong_credentials)
        with pytest.raises(ProviderError) as raised:
            await provider.add_txt(ZONE, NAME, "one", 60)
        shown = [
            repr(provider.settings),  # type: ignore[attr-defined]
            str(provider.settings),  # type: ignore[attr-defined]
            str(raised.value),
            repr(raised.value),
            caplog.text,
        ]
        assert backend.secrets
        for secret in backend.secrets:
            assert all(secret not in text for text in shown)

    async def test_a_zone_the_backend_lacks_is_not_found(
        self, provider: DnsProvider, backend: Backend
    ):
        with pytest.raises(ZoneNotFoundError):
            await provider.add_txt("nowhere.invalid.", "_acme-challenge.nowhere.invalid.", "x", 60)
        lacking = await backend.make_provider(zones=["missing.test."])
        with pytest.raises(ZoneNotFoundError) as raised:
            await lacking.check()
        assert "missing.test." in str(raised.value)

    async def test_throttling_is_retried(self, provider: DnsProvider, backend: Backend):
        if not backend.throttles:
            pytest.skip("this backend has no throttling")
        backend.throttle(2)
        await provider.add_txt(ZONE, NAME, "one", 60)
        assert await backend.read(NAME, "TXT") == ["one"]

    async def test_lasting_throttling_is_a_retryable_error(
        self, provider: DnsProvider, backend: Backend
    ):
        if not backend.throttles:
            pytest.skip("this backend has no throttling")
        backend.throttle(1000)
        with pytest.raises(ProviderThrottledError) as raised:
            await provider.add_txt(ZONE, NAME, "one", 60)
        assert raised.value.retryable

    async def test_a_refused_change_is_rejected(self, provider: DnsProvider, backend: Backend):
        with pytest.raises(ProviderRejectedError) as raised:
            await provider.add_txt(ZONE, backend.refused_name, "one", 60)
        assert not raised.value.retryable

    async def test_a_refused_change_does_not_fail_concurrent_ones(
        self, provider: DnsProvider, backend: Backend
    ):
        refused, accepted = await asyncio.gather(
            provider.add_txt(ZONE, backend.refused_name, "one", 60),
            provider.add_txt(ZONE, NAME, "two", 60),
            return_exceptions=True,
        )
        assert isinstance(refused, ProviderRejectedError)
        assert not isinstance(accepted, BaseException)
        assert await backend.read(NAME, "TXT") == ["two"]

    async def test_an_unreachable_backend_is_a_retryable_error(self, backend: Backend):
        provider = await backend.make_provider(**backend.unreachable)
        with pytest.raises(ProviderUnavailableError) as raised:
            await provider.add_txt(ZONE, NAME, "one", 60)
        assert raised.value.retryable
