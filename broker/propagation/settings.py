"""The ``[propagation]`` settings section and the server address syntax it uses."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

import dns.exception
import dns.name
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

DNS_PORT = 53

_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d+))?")
_WITH_PORT = re.compile(r"([^:\s]+):(\d+)")


def parse_server(text: str) -> tuple[str, int]:
    """``192.0.2.1``, ``192.0.2.1:5353``, ``2001:db8::1``, ``[2001:db8::1]:5353`` ->
    (address, port); the port defaults to 53. Only IP addresses: a server given by name
    would need a resolver to find the resolver."""
    raw = text.strip()
    host, port = raw, str(DNS_PORT)
    if bracketed := _BRACKETED.fullmatch(raw):
        host, port = bracketed.group(1), bracketed.group(2) or port
    elif with_port := _WITH_PORT.fullmatch(raw):
        host, port = with_port.group(1), with_port.group(2)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a server address: use IP, IP:PORT or [IPv6]:PORT, "
            "e.g. 192.0.2.1, 192.0.2.1:5353 or [2001:db8::1]:5353"
        ) from None
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"{text!r}: the port must be between 1 and 65535")
    return str(address), number


def format_server(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def zone_key(zone: str) -> str:
    """A zone name as the checker compares them: lower case, ending in a dot."""
    name = zone.strip().lower()
    try:
        return dns.name.from_text(name or ".").to_text()
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(f"zone {zone!r} is not a domain name: {exc}") from None


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


ServerList = Annotated[list[str], BeforeValidator(_split_list)]


class PropagationSettings(BaseModel):
    """How the checker finds nameservers and how it polls them.

    Polling: the first check runs at once; the n-th pause is
    ``min(max_interval, first_interval * backoff ** n)``. A geometric schedule pauses
    ``first_interval + (backoff - 1) * elapsed``, so with the defaults a wait ends at
    most 50 ms plus 2 % of the time already waited after the last server serves the
    value, until the 1 s cap (reached after ~47 s). bench/propagation chose the values:
    with propagation delays up to 10 s, x1.02 keeps the p95 lateness under 250 ms where
    x1.05 does not (BENCHMARKS.md, "Propagation"). Waits sharing a nameserver address
    stretch their pauses so that together they ask it about ``server_rate`` times a second
    at most (BENCHMARKS.md, "Scale and start-up").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolvers: ServerList = Field(default_factory=list)
    """Discovery resolvers, ``IP`` or ``IP:PORT``; empty: /etc/resolv.conf."""
    nameservers: dict[str, ServerList] = Field(default_factory=dict)
    """Zone -> its nameserver addresses, skipping NS discovery for that zone."""
    policy: Literal["all", "quorum"] = "all"
    """``all``: every address serves the value; ``quorum``: more than half of them do."""
    timeout: float = Field(120.0, gt=0)
    """Default deadline of ``wait()``, seconds."""
    query_timeout: float = Field(1.0, gt=0)
    """One query attempt (UDP, then TCP on truncation, each bounded), seconds."""
    check_timeout: float = Field(5.0, gt=0)
    """One round: discovery plus every server's answer, seconds."""
    first_interval: float = Field(0.05, gt=0)
    max_interval: float = Field(1.0, gt=0)
    backoff: float = Field(1.02, ge=1.0, le=10.0)
    server_rate: float = Field(200.0, gt=0)
    """Queries a second that all waits together send one nameserver address, on average:
    with more waits on it than ``server_rate * interval``, each polls it less often."""
    check_resolvers: ServerList = Field(default_factory=list)
    """Recursive resolvers asked (RD=1) once the authoritative servers are ready."""
    cache_size: int = Field(4096, ge=16, le=1_000_000)
    """Discovery results kept (CNAME, zone, NS set, addresses), each for its TTL."""

    @field_validator("resolvers", "check_resolvers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_server(item)
        return value

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        normalised: dict[str, list[str]] = {}
        for zone, servers in value.items():
            if not servers:
                raise ValueError(f"nameservers for zone {zone!r}: give at least one address")
            for item in servers:
                parse_server(item)
            normalised[zone_key(zone)] = servers
        return normalised

    @model_validator(mode="after")
    def _intervals(self) -> PropagationSettings:
        if self.first_interval > self.max_interval:
            raise ValueError("first_interval must not be longer than max_interval")
        return self

    def resolver_addresses(self) -> list[tuple[str, int]]:
        return [parse_server(item) for item in self.resolvers]

    def check_resolver_addresses(self) -> list[tuple[str, int]]:
        return [parse_server(item) for item in self.check_resolvers]

    def nameserver_overrides(self) -> dict[str, list[tuple[str, int]]]:
        return {
            zone: [parse_server(item) for item in servers]
            for zone, servers in self.nameservers.items()
        }
