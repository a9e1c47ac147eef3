"""From a name to the addresses of its zone's authoritative nameservers.

CNAMEs are followed from the name (at most ``MAX_CNAMES``, loops reported); the zone is
found by walking SOA queries up the target; its NS names are resolved to every A and
AAAA address. Lookups go to the discovery resolvers (RD=1), except for names inside a
zone with nameserver overrides, which are asked directly (RD=0) and whose servers are
the overrides. Results are cached for their TTL; identical lookups in flight are shared.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.resolver

from broker.propagation.cache import Coalescer, TtlCache
from broker.propagation.report import OVERRIDE
from broker.propagation.settings import format_server
from broker.propagation.wire import (
    ANSWERED_RCODES,
    QueryError,
    authority_soa_owner,
    cname_target,
    exchange,
    find_rrset,
    follow_answer,
    negative_ttl,
)

logger = logging.getLogger(__name__)

MAX_CNAMES = 8
MAX_NAMESERVERS = 16
MAX_ADDRESSES_PER_TYPE = 8
NEGATIVE_TTL_CAP = 60.0
ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)

Server = tuple[str, int]
_LookupKey = tuple[str, int, dns.name.Name, dns.rdatatype.RdataType, bool]


class DiscoveryError(Exception):
    """No set of nameservers could be found. ``permanent``: asking again cannot help
    until someone changes DNS (a CNAME loop); the others may be transient."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Nameserver:
    """One address to ask: ``name`` is the NS name, or "override"."""

    name: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Delegation:
    zone: str
    servers: tuple[Nameserver, ...]


class Discovery:
    """Finds CNAME targets, zones and nameserver addresses; owns its cache and lookups."""

    def __init__(
        self,
        *,
        resolvers: Sequence[Server],
        overrides: Mapping[str, Sequence[Server]],
        nameserver_port: int,
        query_timeout: float,
        cache_size: int,
    ) -> None:
        self._configured = tuple(resolvers)
        self._system: tuple[Server, ...] | None = None
        self._overrides = {
            dns.name.from_text(zone): tuple(servers) for zone, servers in overrides.items()
        }
        self._port = nameserver_port
        self._timeout = query_timeout
        self._cache: TtlCache[tuple[str, dns.name.Name, int], object] = TtlCache(cache_size)
        self._lookups: Coalescer[_LookupKey, dns.message.Message] = Coalescer()

    async def close(self) -> None:
        await self._lookups.close()
        self._cache.clear()

    async def target(self, fqdn: dns.name.Name) -> dns.name.Name:
        """The name that ``fqdn``'s CNAME chain ends at (``fqdn`` itself without one)."""
        chain = [fqdn]
        for _ in range(MAX_CNAMES):
            alias = await self._cname(chain[-1])
            if alias is None:
                return chain[-1]
            if alias in chain:
                path = " -> ".join(str(name) for name in [*chain, alias])
                raise DiscoveryError(f"CNAME loop: {path}", permanent=True)
            chain.append(alias)
        if await self._cname(chain[-1]) is None:
            return chain[-1]
        raise DiscoveryError(
            f"CNAME chain from {fqdn} longer than {MAX_CNAMES} (stopped at {chain[-1]})",
            permanent=True,
        )

    async def delegation(self, name: dns.name.Name) -> Delegation:
        """The zone holding ``name`` and every address of its nameservers."""
        override = self._override_for(name)
        if override is not None:
            zone, overrides = override
            return Delegation(
                zone.to_text(),
                tuple(Nameserver(OVERRIDE, host, port) for host, port in dict.fromkeys(overrides)),
            )
        zone = await self._zone(name)
        hosts = await self._nameserver_names(zone)
        found = await asyncio.gather(*(self._addresses_or_reason(host) for host in hosts))
        servers: dict[Server, Nameserver] = {}
        missing = []
        for host, (addresses, reason) in zip(hosts, found, strict=True):
            if not addresses:
                missing.append(f"{host} ({reason or 'no A or AAAA record'})")
            for address in addresses:
                servers.setdefault(
                    (address, self._port), Nameserver(str(host), address, self._port)
                )
        if not servers:
            raise DiscoveryError(f"no address for any nameserver of {zone}: {', '.join(missing)}")
        if missing:
            logger.debug("nameservers of %s without address: %s", zone, ", ".join(missing))
        return Delegation(zone.to_text(), tuple(servers.values()))

    def _override_for(self, name: dns.name.Name) -> tuple[dns.name.Name, tuple[Server, ...]] | None:
        best: tuple[dns.name.Name, tuple[Server, ...]] | None = None
        for zone, servers in self._overrides.items():
            if name.is_subdomain(zone) and (best is None or len(zone) > len(best[0])):
                best = zone, servers
        return best

    async def _cname(self, name: dns.name.Name) -> dns.name.Name | None:
        found, cached = self._cache.get(("cname", name, 0))
        if found:
            return cached if isinstance(cached, dns.name.Name) else None
        response = await self._ask(name, dns.rdatatype.CNAME)
        rrset = find_rrset(response.answer, name, dns.rdatatype.CNAME)
        alias = cname_target(rrset)
        if rrset is not None and alias is not None:
            self._cache.put(("cname", name, 0), alias, rrset.ttl)
        else:
            self._cache.put(("cname", name, 0), None, _negative(response))
        return alias

    async def _zone(self, name: dns.name.Name) -> dns.name.Name:
        candidate = name
        walked = []
        while True:
            found, cached = self._cache.get(("zone", candidate, 0))
            if found and isinstance(cached, dns.name.Name):
                zone = cached
                break
            walked.append(candidate)
            response = await self._ask(candidate, dns.rdatatype.SOA)
            soa = find_rrset(response.answer, candidate, dns.rdatatype.SOA)
            owner = authority_soa_owner(response)
            if soa is not None:
                zone, ttl = candidate, float(soa.ttl)
                break
            if owner is not None and candidate.is_subdomain(owner):
                zone, ttl = owner, _negative(response)
                break
            if candidate == dns.name.root:
                raise DiscoveryError(f"no SOA found for {name}")
            candidate = candidate.parent()
        if zone == dns.name.root:
            raise DiscoveryError(f"no SOA found for {name} below the root: is its zone delegated?")
        for step in walked:
            self._cache.put(("zone", step, 0), zone, ttl)
        return zone

    async def _nameserver_names(self, zone: dns.name.Name) -> tuple[dns.name.Name, ...]:
        found, cached = self._cache.get(("ns", zone, 0))
        if found and isinstance(cached, tuple):
            return cached
        response = await self._ask(zone, dns.rdatatype.NS)
        _, rrset = follow_answer(response, zone, dns.rdatatype.NS)
        names = sorted(
            {rdata.target for rdata in rrset or () if isinstance(rdata, dns.rdtypes.ANY.NS.NS)}
        )
        if not names or rrset is None:
            raise DiscoveryError(f"zone {zone} has no NS records")
        hosts = tuple(names[:MAX_NAMESERVERS])
        self._cache.put(("ns", zone, 0), hosts, rrset.ttl)
        return hosts

    async def _addresses_or_reason(self, host: dns.name.Name) -> tuple[tuple[str, ...], str | None]:
        addresses: list[str] = []
        reasons = []
        for rdtype in ADDRESS_TYPES:
            try:
                addresses.extend(await self._addresses(host, rdtype))
            except DiscoveryError as exc:
                reasons.append(str(exc))
        return tuple(addresses), "; ".join(reasons) or None

    async def _addresses(self, host: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> list[str]:
        found, cached = self._cache.get(("address", host, rdtype))
        if found and isinstance(cached, list):
            return cached
        response = await self._ask(host, rdtype)
        _, rrset = follow_answer(response, host, rdtype)
        if rrset is None:
            addresses: list[str] = []
            self._cache.put(("address", host, rdtype), addresses, _negative(response))
            return addresses
        addresses = [rdata.to_text() for rdata in rrset][:MAX_ADDRESSES_PER_TYPE]
        self._cache.put(("address", host, rdtype), addresses, rrset.ttl)
        return addresses

    async def _ask(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        """The first NOERROR or NXDOMAIN response from the servers that answer for ``name``."""
        override = self._override_for(name)
        recursive = override is None
        servers = override[1] if override is not None else await self._resolvers()
        failures = []
        for host, port in servers:
            key = (host, port, name, rdtype, recursive)
            try:
                start = functools.partial(self._exchange, name, rdtype, host, port, recursive)
                response = await self._lookups.run(key, start)
            except QueryError as exc:
                failures.append(f"{format_server(host, port)}: {exc}")
                continue
            if response.rcode() in ANSWERED_RCODES:
                return response
            failures.append(f"{format_server(host, port)}: {dns.rcode.to_text(response.rcode())}")
        what = f"{name} {dns.rdatatype.to_text(rdtype)}"
        raise DiscoveryError(f"cannot look up {what}: {'; '.join(failures)}")

    async def _exchange(
        self,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        host: str,
        port: int,
        recursive: bool,
    ) -> dns.message.Message:
        return await exchange(
            name, rdtype, host, port, recursive=recursive, attempt_timeout=self._timeout
        )

    async def _resolvers(self) -> tuple[Server, ...]:
        if self._configured:
            return self._configured
        if self._system is None:
            self._system = await asyncio.to_thread(system_resolvers)
        return self._system


def system_resolvers() -> tuple[Server, ...]:
    """The nameservers of /etc/resolv.conf (as dnspython reads it); raises DiscoveryError."""
    try:
        resolver = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError) as exc:
        raise DiscoveryError(f"no discovery resolver: {exc}; set propagation.resolvers") from None
    servers: list[Server] = []
    for nameserver in resolver.nameservers:
        if isinstance(nameserver, str):
            servers.append((nameserver, resolver.port))
        elif isinstance(nameserver, dns.nameserver.Do53Nameserver):
            servers.append((nameserver.address, nameserver.port))
    if not servers:
        raise DiscoveryError("no discovery resolver in /etc/resolv.conf; set propagation.resolvers")
    return tuple(servers)


def _negative(response: dns.message.Message) -> float:
    ttl = negative_ttl(response)
    return min(float(ttl), NEGATIVE_TTL_CAP) if ttl is not None else NEGATIVE_TTL_CAP
