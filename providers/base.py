"""The contract every DNS backend implements.

Names are absolute, lower-case, IDNA and end in a dot; values are unquoted. Adding a
value keeps the other values of the RRset; removing a value that is gone succeeds.
Only ProviderError subclasses leave a provider.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar


class ProviderError(Exception):
    retryable: ClassVar[bool] = False


class ProviderAuthError(ProviderError):
    """The backend rejected the credentials."""


class ZoneNotFoundError(ProviderError):
    """No zone of this provider contains the name."""


class ProviderThrottledError(ProviderError):
    retryable = True


class ProviderUnavailableError(ProviderError):
    retryable = True


class ProviderRejectedError(ProviderError):
    """The backend understood the change and refused it."""


@dataclass(frozen=True, slots=True)
class Change:
    """A handle on a submitted change, for backends that apply changes asynchronously."""

    provider: str
    id: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    applies_synchronously: bool = True
    merges_concurrent_changes: bool = False
    rewrites_rrset: bool = False
    """A change writes the whole RRset as read just before (Route53's UPSERT): writers in
    other processes must take turns, or one of them loses the other's value."""
    keeps_records: bool = True
    """The backend keeps its records itself (a cloud API, a DNS server), so a crash of
    the broker between its store and the backend can leave them apart: its changes are
    recorded as intents first. False for the embedded zone, rebuilt from the store."""
    can_fail: bool = True
    """A call may fail (a remote API, injected faults). False for the embedded zone in
    memory: its removals need no mark, as nothing can stop them half-way."""


class DnsProvider(ABC):
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def backend(self) -> DnsProvider:
        """The provider itself, under any wrappers (retries, injected faults)."""
        return self

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create SDK clients and sockets."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what open() made."""

    @abstractmethod
    async def check(self) -> None:
        """Raise ProviderError when the backend cannot be used (credentials, reachability)."""

    @abstractmethod
    def zones(self) -> tuple[str, ...]:
        """The zones this provider serves, as configured or discovered at open()."""

    async def find_zone(self, fqdn: str) -> str:
        """The most specific zone of this provider containing ``fqdn``."""
        best = ""
        for zone in self.zones():
            if (fqdn == zone or fqdn.endswith("." + zone)) and len(zone) > len(best):
                best = zone
        if not best:
            raise ZoneNotFoundError(f"provider {self.name!r} serves no zone containing {fqdn}")
        return best

    @abstractmethod
    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        """Add one value to the TXT RRset at ``name``; a value already there is a no-op."""

    @abstractmethod
    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        """Remove one value from the TXT RRset at ``name``; a value already gone is a no-op."""

    @abstractmethod
    async def list_txt(self, zone: str, name: str) -> list[str]:
        """The values of the TXT RRset at ``name``."""

    async def wait_applied(self, change: Change | None) -> None:  # noqa: B027 - optional hook
        """Return once ``change`` is live on the backend's servers."""


class ProviderWrapper(DnsProvider):
    """A provider in front of another (retries, injected faults): every call goes to
    ``inner`` unless a subclass says otherwise."""

    def __init__(self, inner: DnsProvider) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.capabilities = inner.capabilities  # type: ignore[misc]

    @property
    def backend(self) -> DnsProvider:
        return self.inner.backend

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def check(self) -> None:
        await self.inner.check()

    def zones(self) -> tuple[str, ...]:
        return self.inner.zones()

    async def find_zone(self, fqdn: str) -> str:
        return await self.inner.find_zone(fqdn)

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        return await self.inner.add_txt(zone, name, value, ttl)

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return await self.inner.remove_txt(zone, name, value)

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return await self.inner.list_txt(zone, name)

    async def wait_applied(self, change: Change | None) -> None:
        await self.inner.wait_applied(change)
