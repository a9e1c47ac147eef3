"""What replicas sharing one store tell each other, and who among them leads.

A change names what changed, not how: the receiver reads the current state back from
the store, so changes may arrive twice or out of order without harm. ``Resync`` says
the feed (re)connected and anything may have changed while it was away.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TxtChanged:
    """A live value at ``fqdn`` of ``provider`` appeared or ended."""

    provider: str
    fqdn: str


@dataclass(frozen=True, slots=True)
class TokenChanged:
    key: str


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    username: str
    subdomain: str


@dataclass(frozen=True, slots=True)
class Resync:
    """The feed is (again) connected: reload everything."""


StoreChange = TxtChanged | TokenChanged | RegistrationChanged | Resync
ApplyChange = Callable[[StoreChange], Awaitable[None]]


def parse_change(payload: str) -> StoreChange | None:
    """A notification's payload (``txt <provider> <fqdn>``, ``token <key>``,
    ``registration <username> <subdomain>``); None for one this broker does not know."""
    kind, _, rest = payload.partition(" ")
    parts = rest.split(" ")
    if kind == "txt" and len(parts) == 2:
        return TxtChanged(parts[0], parts[1])
    if kind == "token" and len(parts) == 1:
        return TokenChanged(parts[0])
    if kind == "registration" and len(parts) == 2:
        return RegistrationChanged(parts[0], parts[1])
    return None


class ChangeFeed(ABC):
    """Changes made through other replicas, delivered to one consumer."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """True while changes are being received."""

    @property
    @abstractmethod
    def error(self) -> str | None:
        """Why the feed is not connected, if it is not."""

    @property
    @abstractmethod
    def token_generation(self) -> int | None:
        """Changes with every token change and every reconnection; None while
        disconnected."""

    @abstractmethod
    async def run(self, apply: ApplyChange) -> None:
        """Deliver changes to ``apply`` until cancelled, reconnecting as needed; after
        each (re)connection ``Resync`` comes first."""


class Leadership(ABC):
    """One replica at a time holds it; it passes on when that replica stops or dies."""

    @abstractmethod
    async def try_acquire(self) -> bool:
        """True when this process holds the leadership (now, or still)."""

    @abstractmethod
    async def release(self) -> None: ...
