"""Tokens, scopes, source CIDRs and the client address behind trusted proxies.

A token reads ``d01_<key>_<secret>``: ``key`` (64 bits, not secret) finds the stored
record, the secret carries 256 random bits, and only SHA-256 of the whole token is
kept, compared in constant time. Token records are cached only while the store's token
generation stays the same; any token change, by any replica or process (the CLI
included), moves it on, so a revocation takes effect at once everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from broker.dnsname import ChallengeTarget, Scope
from broker.errors import (
    AdminRequiredError,
    ForbiddenNameError,
    ForbiddenSourceError,
    InvalidRequestError,
    PersistRightRequiredError,
    UnauthorizedError,
)
from broker.secretbox import SecretBox
from broker.store import Store, TokenRecord
from broker.tsig import DEFAULT_ALGORITHM, TsigKey, new_key

if TYPE_CHECKING:
    from broker.oidc.verify import OidcVerifier

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TOKEN_PREFIX = "d01_"  # noqa: S105 - a format marker, not a secret
OIDC_PREFIX = "oidc:"
"""Principals of OIDC ID tokens are ``oidc:<issuer name>:<sub>`` (no token name has ':')."""
_TOKEN_SHAPE = re.compile(r"d01_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
TOKEN_NAME = re.compile(r"(?=.{1,63}\Z)[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*")
"""Also a domain name (labels between single dots), which its TSIG key is named after."""
_DUMMY_DIGEST = hashlib.sha256(b"no such token").hexdigest()
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""An OIDC ID token (three base64url parts, a JSON header first), not a broker token."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly made token: ``secret`` (and the TSIG key's secret) are shown once."""

    secret: str
    record: TokenRecord
    tsig: TsigKey | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    name: str
    scopes: tuple[Scope, ...]
    admin: bool
    one_shot_key: str | None = None
    """The lookup key of a one-shot token (good for one present and its cleanup)."""
    persist: bool = False
    """May create dns-persist-01 grants for names in its scopes (admins always may)."""

    def may_challenge(self, base: str) -> bool:
        return self.admin or any(scope.covers(base) for scope in self.scopes)

    def uncovered(self, names: Sequence[str]) -> list[str]:
        """The certificate names (``*.`` allowed) this caller may not prove."""
        return [n for n in names if not self.may_challenge(ChallengeTarget.from_domain(n).base)]

    def require_challenge(self, base: str, fqdn: str) -> None:
        if self.may_challenge(base):
            return
        allowed = ", ".join(str(scope) for scope in self.scopes) or "(none)"
        hint = ""
        if any(scope.below and scope.base == base for scope in self.scopes):
            hint = (
                f"; '*.{base[:-1]}' covers names below {base[:-1]}, while {fqdn} needs the "
                f"scope '{base[:-1]}' (used by both {base[:-1]} and *.{base[:-1]})"
            )
        raise ForbiddenNameError(
            f"token {self.name!r} may not write {fqdn}: its scopes are {allowed}{hint}"
        )

    def may_persist(self, base: str) -> bool:
        return self.admin or (self.persist and self.may_challenge(base))

    def require_persist(self, base: str, fqdn: str) -> None:
        """A grant at ``fqdn`` is a standing permission to issue for ``base``: only an
        admin token, or one with the persist right whose scopes cover ``base``."""
        if not self.admin and not self.persist:
            raise PersistRightRequiredError(
                f"token {self.name!r} may not create or remove dns-persist-01 grants: that "
                "needs an admin token or one made with the persist right "
                "(token create --persist)"
            )
        self.require_challenge(base, fqdn)

    def require_admin(self) -> None:
        if not self.admin:
            raise AdminRequiredError(f"token {self.name!r} is not an admin token")


def is_jwt(secret: str) -> bool:
    """Three base64url parts, the first a JSON object: never a broker token (``d01_...``)."""
    return _JWT_SHAPE.fullmatch(secret) is not None


def digest_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


RESERVED_TOKEN_NAMES = frozenset({"exchange"})
"""Names that are paths of their own under /v1/tokens/."""


def validate_token_name(name: str) -> str:
    if not TOKEN_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"token name {name!r} must be 1-63 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit, with no two dots in a row and no dot at the end"
        )
    if name in RESERVED_TOKEN_NAMES:
        raise InvalidRequestError(f"token name {name!r} is reserved: choose another")
    return name


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise InvalidRequestError(
                f"{text!r} is not a CIDR: write e.g. 10.0.0.0/8, 192.0.2.7/32 or 2001:db8::/32"
            ) from None
    return tuple(networks)


def issue_token(
    name: str,
    scopes: Sequence[str],
    *,
    cidrs: Sequence[str] = (),
    admin: bool = False,
    lifetime: float | None = None,
    now: float | None = None,
    tsig: str | None = None,
    box: SecretBox | None = None,
    one_shot: bool = False,
    persist: bool = False,
) -> IssuedToken:
    """Validate the request and make a new token (the caller stores the record); with
    ``tsig`` (an algorithm) it gets a TSIG key too, its secret sealed by ``box``.
    A ``one_shot`` token is good for one present and the cleanup of that same value."""
    validate_token_name(name)
    if one_shot and (admin or tsig is not None):
        raise InvalidRequestError(
            "a one-shot token is for one present and its cleanup: it cannot be an admin "
            "token nor have a TSIG key"
        )
    tsig_key = None if tsig is None else new_key(name, tsig)
    parsed = [Scope.parse(pattern) for pattern in scopes]
    networks = parse_cidrs(cidrs)
    if not parsed and not admin:
        raise InvalidRequestError(
            'a token needs at least one scope (--allow example.com / "allow": [...]) '
            "unless it is an admin token"
        )
    created = time.time() if now is None else now
    key = secrets.token_hex(8)
    secret = f"{TOKEN_PREFIX}{key}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(
        name=name,
        key=key,
        digest=digest_token(secret),
        scopes=tuple(str(scope) for scope in parsed),
        cidrs=tuple(str(network) for network in networks),
        admin=admin,
        created_at=created,
        expires_at=None if lifetime is None else created + lifetime,
        one_shot="" if one_shot else None,
        persist=persist,
    )
    if tsig_key is not None:
        kept = (box or SecretBox(None)).seal(tsig_key.secret, bound_to=key)
        record = replace(
            record, tsig_name=tsig_key.name, tsig_algorithm=tsig_key.algorithm, tsig_secret=kept
        )
    return IssuedToken(secret=secret, record=record, tsig=tsig_key)


def rotate_token(
    record: TokenRecord, *, tsig: bool = False, box: SecretBox | None = None
) -> IssuedToken:
    """A new secret for a stored token; everything else stays (name, lookup key, scopes,
    networks, admin flag, expiry). Its TSIG key is kept unless ``tsig``: then it gets a
    new secret under the same name and algorithm (a token without a key gets one, of the
    default algorithm). The caller stores the record."""
    secret = f"{TOKEN_PREFIX}{record.key}_{secrets.token_urlsafe(32)}"
    rotated = replace(record, digest=digest_token(secret))
    if not tsig:
        return IssuedToken(secret=secret, record=rotated)
    key = new_key(record.name, record.tsig_algorithm or DEFAULT_ALGORITHM)
    kept = (box or SecretBox(None)).seal(key.secret, bound_to=record.key)
    rotated = replace(rotated, tsig_name=key.name, tsig_algorithm=key.algorithm, tsig_secret=kept)
    return IssuedToken(secret=secret, record=rotated, tsig=key)


TOKEN_CACHE_SIZE = 4096


class Authenticator:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        cache_size: int = TOKEN_CACHE_SIZE,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self._store = store
        self.oidc = oidc
        self._clock = clock
        self._cache: OrderedDict[str, tuple[int, TokenRecord | None]] = OrderedDict()
        self._cache_size = cache_size

    async def _token(self, key: str) -> TokenRecord | None:
        """The stored token with this key, from the cache while no token has changed."""
        generation = await self._store.token_generation()
        cached = self._cache.get(key)
        if cached is not None and generation is not None and cached[0] == generation:
            self._cache.move_to_end(key)
            return cached[1]
        record = await self._store.token_by_key(key)
        if generation is not None:
            self._cache[key] = (generation, record)
            self._cache.move_to_end(key)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return record

    def forget(self, key: str) -> None:
        """Drop a token from the cache at once: this process changed it, and the store's
        generation may move on only when its change notification comes back."""
        self._cache.pop(key, None)

    async def authenticate(
        self, secret: str | None, source: Callable[[], IPAddress | None]
    ) -> Principal:
        """``source`` gives the caller's address; it is asked only for CIDR-bound tokens."""
        if not secret:
            raise UnauthorizedError("send 'Authorization: Bearer <token>'")
        if is_jwt(secret):
            return await self._identity(secret, source)
        match = _TOKEN_SHAPE.fullmatch(secret)
        record = await self._token(match.group(1)) if match else None
        expected = record.digest if record is not None else _DUMMY_DIGEST
        if not hmac.compare_digest(digest_token(secret), expected) or record is None:
            raise UnauthorizedError("the token is not valid")
        return principal_of(record, self._clock(), source)

    async def _identity(self, token: str, source: Callable[[], IPAddress | None]) -> Principal:
        """The principal of an OIDC ID token used directly: never admin, its scopes those
        of the first matching rule. It may be used again until it expires (a job's
        present and cleanup); only the exchange makes an ID token single-use."""
        if self.oidc is None:
            raise UnauthorizedError(
                "this is an OIDC ID token, and this broker trusts no OIDC issuer "
                "(configure [[oidc.issuers]])"
            )
        identity = await self.oidc.verify(token, source=source())
        return Principal(name=identity.name, scopes=_parsed(identity.scopes), admin=False)


def principal_of(
    record: TokenRecord, now: float, source: Callable[[], IPAddress | None]
) -> Principal:
    """The caller a stored token stands for, once its secret (or TSIG key) was shown:
    refused when revoked, expired, or used from outside its networks."""
    if record.revoked_at is not None:
        raise UnauthorizedError(f"token {record.name!r} was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise UnauthorizedError(f"token {record.name!r} has expired")
    if record.cidrs:
        address = source()
        if not _source_allowed(address, record.cidrs):
            raise ForbiddenSourceError(
                f"token {record.name!r} may be used only from {', '.join(record.cidrs)}; "
                f"this request came from {address}"
            )
    return Principal(
        name=record.name,
        scopes=_parsed(record.scopes),
        admin=record.admin,
        one_shot_key=None if record.one_shot is None else record.key,
        persist=record.persist,
    )


@functools.lru_cache(maxsize=4096)
def _parsed(patterns: tuple[str, ...]) -> tuple[Scope, ...]:
    return tuple(Scope.parse(pattern) for pattern in patterns)


def unwrap(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (::ffff:192.0.2.7) is the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _source_allowed(source: IPAddress | None, cidrs: Iterable[str]) -> bool:
    if source is None:
        return False
    address = unwrap(source)
    return any(address in ipaddress.ip_network(cidr) for cidr in cidrs)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """The caller's address: the peer, unless the peer is a trusted proxy, in which case
    the right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    address = _parse_address(peer)
    if address is None or not forwarded_for or not _trusted(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse_address(hop.strip())
        if hop_address is None:
            return address
        address = hop_address
        if not _trusted(address, trusted_proxies):
            return address
    return address


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


@functools.lru_cache(maxsize=4096)
def _parse_address(text: str | None) -> IPAddress | None:
    """Cached: the same few peers call again and again (addresses are immutable)."""
    if not text:
        return None
    try:
        return unwrap(ipaddress.ip_address(text.split("%")[0]))
    except ValueError:
        return None
