"""What one check found: per authoritative server, per recursive resolver, and overall."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Policy = Literal["all", "quorum"]
OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class ServerState:
    """One address of one authoritative nameserver.

    ``answered``: it gave an authoritative answer (AA set, NOERROR or NXDOMAIN).
    ``seen``: that answer held the value. ``error``: why it did not answer (REFUSED,
    SERVFAIL, not authoritative, timeout, ...), None when it did. ``checked_at``: unix
    time of the answer or failure, None before the first query. ``counted``: False when
    this host has no route to the address at all (IPv6 on a v4-only host), which is then
    reported but left out of the readiness decision.
    """

    nameserver: str
    address: str
    port: int
    answered: bool
    seen: bool
    error: str | None
    checked_at: float | None
    counted: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "nameserver": self.nameserver,
            "address": self.address,
            "port": self.port,
            "answered": self.answered,
            "seen": self.seen,
            "error": self.error,
            "checked_at": self.checked_at,
            "counted": self.counted,
        }


@dataclass(frozen=True, slots=True)
class ResolverState:
    """One recursive resolver asked with RD=1, apart from readiness.

    ``negative``: it answered NXDOMAIN or NODATA; ``negative_ttl``: the seconds it may
    keep answering so (the SOA's TTL capped by its minimum, RFC 2308), when it said.
    """

    address: str
    port: int
    answered: bool
    seen: bool
    negative: bool
    negative_ttl: int | None
    error: str | None
    checked_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "answered": self.answered,
            "seen": self.seen,
            "negative": self.negative,
            "negative_ttl": self.negative_ttl,
            "error": self.error,
            "checked_at": self.checked_at,
        }


@dataclass(frozen=True, slots=True)
class PropagationReport:
    """The state of ``value`` at ``fqdn`` (``target`` after CNAMEs, in ``zone``)."""

    fqdn: str
    target: str
    zone: str | None
    value: str
    ready: bool
    servers: tuple[ServerState, ...]
    resolvers: tuple[ResolverState, ...]
    started_at: float
    elapsed: float
    error: str | None

    def lacking(self) -> tuple[ServerState, ...]:
        """The servers that have not (yet) been seen serving the value."""
        return tuple(server for server in self.servers if not server.seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "fqdn": self.fqdn,
            "target": self.target,
            "zone": self.zone,
            "value": self.value,
            "ready": self.ready,
            "servers": [server.to_json() for server in self.servers],
            "resolvers": [resolver.to_json() for resolver in self.resolvers],
            "started_at": self.started_at,
            "elapsed": round(self.elapsed, 6),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PropagationReport:
        """The report ``to_json`` gave (as kept in the store)."""
        return cls(
            **{
                **data,
                "servers": tuple(ServerState(**server) for server in data["servers"]),
                "resolvers": tuple(ResolverState(**resolver) for resolver in data["resolvers"]),
            }
        )


def is_ready(servers: Iterable[ServerState], policy: Policy) -> bool:
    """``all``: every address answered with the value. ``quorum``: more than half of
    all addresses did; the others, unreachable or not, are reported only. Addresses
    not ``counted`` (no route from this host) are left out of both."""
    states = [state for state in servers if state.counted]
    if not states:
        return False
    seen = sum(1 for state in states if state.seen)
    if policy == "all":
        return seen == len(states)
    return seen * 2 > len(states)


def describe_lacking(servers: Iterable[ServerState]) -> str:
    """``ns2.example.test. 192.0.2.2:53 (answered without the value), ...``."""
    parts = []
    for state in servers:
        if state.seen:
            continue
        if state.error is not None:
            why = state.error
        elif state.answered:
            why = "answered without the value"
        else:
            why = "not asked yet"
        where = f"[{state.address}]" if ":" in state.address else state.address
        parts.append(f"{state.nameserver} {where}:{state.port} ({why})")
    return ", ".join(parts)
