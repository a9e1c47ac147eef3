"""CNAME delegation of challenge names (acme-dns style).

``_acme-challenge.example.org CNAME x.auth.example.test.`` sends the value to the
target. Names inside the broker's own embedded zones are looked up in memory; names in
no zone of the broker are looked up in DNS (briefly cached); names in another
provider's zone are taken as they are.

A CNAME in the broker's own zones is the operator's; one found in DNS is set by whoever
holds that name — typically the token's holder — so a chain with such a link may end
only at a name the token could write at itself. Otherwise a token for ``evil.example``
could point its challenge at ``_acme-challenge.victim.example.test`` (or at an acme-dns
account's name) and have the broker prove a name it was never given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from broker.auth import Principal
from broker.dnsname import CHALLENGE_LABEL, ChallengeTarget, is_subdomain, normalize_name
from broker.errors import DnsLookupError, ForbiddenNameError, NoZoneError
from providers.embedded import ZoneSet

MAX_CHAIN = 8
POSITIVE_CACHE_SECONDS = 30.0
NEGATIVE_CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10000


class DelegationResolver:
    def __init__(
        self,
        zone_set: ZoneSet,
        served_zones: Callable[[], Sequence[str]],
        *,
        resolvers: Sequence[tuple[str, int]] = (),
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._zone_set = zone_set
        self._served_zones = served_zones
        self._resolver = dns.asyncresolver.Resolver(configure=not resolvers)
        if resolvers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in resolvers
            ]
        self._resolver.lifetime = timeout
        self._clock = clock
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def target(self, fqdn: str) -> str:
        """Where a value for ``fqdn`` belongs: the end of its CNAME chain, or ``fqdn``."""
        return (await self._follow(fqdn))[0]

    async def write_target(self, principal: Principal, fqdn: str) -> str:
        """Where ``principal``'s value for the challenge ``fqdn`` goes: the end of its
        chain, refused when a link of it came from DNS and the end is not the token's."""
        end, from_dns = await self._follow(fqdn)
        if from_dns and not _may_write(principal, end):
            raise ForbiddenNameError(
                f"{fqdn} leads by a CNAME found in DNS (set by whoever holds that name) to "
                f"{end}, which token {principal.name!r} may not write: a token reaches through "
                f"such a CNAME only names its scopes cover; allow {end[:-1]} in the token to "
                "permit it"
            )
        return end

    async def _follow(self, fqdn: str) -> tuple[str, bool]:
        """The end of the chain, and whether any link of it was read from DNS."""
        seen = [fqdn]
        current = fqdn
        from_dns = False
        for _ in range(MAX_CHAIN):
            following, looked_up = await self._cname(current)
            if following is None:
                return current, from_dns
            from_dns = from_dns or looked_up
            if following in seen:
                raise NoZoneError(
                    f"the CNAME chain from {fqdn} loops ({' -> '.join([*seen, following])})"
                )
            seen.append(following)
            current = following
        raise NoZoneError(f"the CNAME chain from {fqdn} is longer than {MAX_CHAIN} names")

    async def _cname(self, name: str) -> tuple[str | None, bool]:
        """The CNAME target at ``name`` (None: none), and whether it was read from DNS."""
        zone = self._zone_set.find_key(name)
        if zone is not None:
            return zone.cname(name), False
        if any(is_subdomain(name, served) for served in self._served_zones()):
            return None, False
        return await self._lookup(name), True

    async def _lookup(self, name: str) -> str | None:
        cached = self._cache.get(name)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            answer = await self._resolver.resolve(name, "CNAME", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return self._remember(name, None, NEGATIVE_CACHE_SECONDS)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsLookupError(
                f"could not look up a CNAME at {name}: {exc or type(exc).__name__}"
            ) from None
        if answer.rrset is None:
            return self._remember(name, None, NEGATIVE_CACHE_SECONDS)
        target = str(answer.rrset[0].target).lower()
        return self._remember(name, target, min(answer.rrset.ttl, POSITIVE_CACHE_SECONDS))

    def _remember(self, name: str, target: str | None, seconds: float) -> str | None:
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[name] = (target, self._clock() + seconds)
        return target


def _may_write(principal: Principal, name: str) -> bool:
    """Whether the token could write at ``name`` itself: a challenge name in its scopes,
    or a name one of its scopes names exactly (never by suffix, as ``authorized_target``)."""
    if name.startswith(CHALLENGE_LABEL + "."):
        return principal.may_challenge(name.partition(".")[2])
    return principal.admin or any(not s.below and s.base == name for s in principal.scopes)


async def authorized_target(
    principal: Principal, fqdn: str, delegation: DelegationResolver | None
) -> ChallengeTarget:
    """The challenge a client means by writing at ``fqdn``: an ``_acme-challenge`` name as
    it is, or the target a CNAME at an ``_acme-challenge`` name in the token's scope points
    to (clients such as lego follow CNAMEs before they write) — never by suffix alone, and
    never because a scope names ``fqdn``: the scope ``example.com`` proves example.com at
    ``_acme-challenge.example.com``, and a TXT at ``example.com`` itself would prove it to
    others (site verification records). Scopes are checked later, by the service, on the
    challenge returned."""
    name = normalize_name(fqdn, what="fqdn")
    if name.startswith(CHALLENGE_LABEL + "."):
        return ChallengeTarget.from_fqdn(name)
    if principal.admin:
        return ChallengeTarget(base=name, fqdn=name)
    if delegation is not None:
        for scope in principal.scopes:
            origin = f"{CHALLENGE_LABEL}.{scope.base}"
            if not scope.below and await delegation.target(origin) == name:
                return ChallengeTarget(base=scope.base, fqdn=origin)
    raise ForbiddenNameError(
        f"{name} is no _acme-challenge name and no name in token {principal.name!r}'s scope "
        "delegates to it by CNAME; allow the delegating name exactly (not *.), or use RAW mode"
    )
