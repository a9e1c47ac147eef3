"""acme-dns accounts: register, authenticate, update, list, delete.

An account may write TXT values at ``<subdomain>.<zone>`` only, where users point their
``_acme-challenge`` CNAMEs. Unlike acme-dns, every live value is kept (up to
``challenges.max_values_per_name``, the oldest giving way beyond), values have leases,
and a registered name answers NODATA, not NXDOMAIN.

Passwords are 40 random characters (240 bits), so a fast keyed hash (HMAC-SHA256) is
as safe as bcrypt here and keeps /update cheap. Accounts imported from acme-dns carry
their bcrypt hash until their first successful update, which rehashes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import bcrypt
import dns.name

from broker.auth import IPAddress, Principal, unwrap
from broker.dnsname import ChallengeTarget, Scope
from broker.service import ChallengeService
from broker.store import RegistrationRecord, Store
from providers.embedded import EmbeddedZone, ZoneSet

log = logging.getLogger(__name__)

PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz1234567890-_"  # noqa: S105 - an alphabet, not a secret
_KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{40}")
_SUBDOMAIN_SHAPE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TXT_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_DUMMY = b"dns01-broker: no such account"


class AcmeDnsError(Exception):
    """An error in acme-dns's own words: HTTP status and its ``error`` string."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def forbidden() -> AcmeDnsError:
    return AcmeDnsError(401, "forbidden")


@dataclass(frozen=True, slots=True)
class NewAccount:
    record: RegistrationRecord
    password: str
    fulldomain: str


def parse_allowfrom(entries: Iterable[str]) -> tuple[str, ...]:
    """Validate CIDRs as acme-dns does (brackets stripped; a bare address is invalid)."""
    cleaned = []
    for entry in entries:
        text = entry.replace("[", "").replace("]", "")
        if "/" not in text:
            raise AcmeDnsError(400, "invalid_allowfrom_cidr")
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise AcmeDnsError(400, "invalid_allowfrom_cidr") from None
        cleaned.append(text)
    return tuple(cleaned)


def allowed_from(allowfrom: Sequence[str], source: IPAddress | None) -> bool:
    if not allowfrom:
        return True
    if source is None:
        return False
    address = unwrap(source)
    for entry in allowfrom:
        network = ipaddress.ip_network(entry, strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        if address.version == network.version and address in network:
            return True
    return False


class AcmeDnsAccounts:
    def __init__(
        self,
        store: Store,
        service: ChallengeService,
        zone_set: ZoneSet,
        zone: str,
        *,
        hash_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.service = service
        self.zone = zone
        self._zone_set = zone_set
        self._configured_key = hash_key
        self._key = b""
        self._clock = clock
        self._served: set[str] = set()

    async def open(self) -> None:
        """Load the hash key and make every registered name exist in DNS."""
        key = self._configured_key or await self.store.secret(
            "acmedns-hash-key", secrets.token_hex(32)
        )
        self._key = key.encode()
        await self.reload()

    async def reload(self) -> None:
        """Serve exactly the registered names (NODATA until their first value)."""
        registered = {self.fqdn(record) for record in await self.store.list_registrations()}
        zone = self._embedded_zone()
        for name in self._served - registered:
            zone.release(name)
        for name in registered:
            zone.reserve(name)
        self._served = registered

    async def sync(self, username: str, subdomain: str) -> None:
        """Serve or stop serving one name after another replica (un)registered it."""
        if not _SUBDOMAIN_SHAPE.fullmatch(subdomain):
            return
        name = f"{subdomain.lower()}.{self.zone}"
        if await self.store.registration(username) is None:
            self._embedded_zone().release(name)
            self._served.discard(name)
        else:
            self._embedded_zone().reserve(name)
            self._served.add(name)

    def fqdn(self, record: RegistrationRecord) -> str:
        return f"{record.subdomain}.{self.zone}"

    def fulldomain(self, record: RegistrationRecord) -> str:
        return self.fqdn(record)[:-1]

    def _embedded_zone(self) -> EmbeddedZone:
        zone = self._zone_set.find(dns.name.from_text(self.zone))
        if zone is None:
            raise RuntimeError(f"acme-dns zone {self.zone} is in no embedded zone")
        return zone

    def _hash(self, password: str) -> str:
        return hmac.new(self._key, password.encode(), hashlib.sha256).hexdigest()

    async def register(self, allowfrom: Sequence[str]) -> NewAccount:
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(40))
        record = RegistrationRecord(
            username=str(uuid.uuid4()),
            subdomain=str(uuid.uuid4()),
            key_hash=self._hash(password),
            allowfrom=parse_allowfrom(allowfrom),
            created_at=self._clock(),
        )
        await self.store.create_registration(record)
        self._embedded_zone().reserve(self.fqdn(record))
        self._served.add(self.fqdn(record))
        log.info("acme-dns account registered username=%s", record.username)
        return NewAccount(record, password, self.fulldomain(record))

    async def authenticate(
        self, username: str | None, key: str | None, source: Callable[[], IPAddress | None]
    ) -> RegistrationRecord:
        """The account for X-Api-User / X-Api-Key, or AcmeDnsError 401 ``forbidden``."""
        try:
            canonical = str(uuid.UUID(username or ""))
        except ValueError:
            raise forbidden() from None
        if key is None or not _KEY_SHAPE.fullmatch(key):
            raise forbidden()
        record = await self.store.registration(canonical)
        if record is None:
            hmac.compare_digest(self._hash(key), self._hash(_DUMMY.decode()))
            raise forbidden()
        if not await self._password_matches(record, key):
            raise forbidden()
        if not allowed_from(record.allowfrom, source()):
            raise forbidden()
        return record

    async def _password_matches(self, record: RegistrationRecord, key: str) -> bool:
        if record.key_hash is not None:
            return hmac.compare_digest(self._hash(key), record.key_hash)
        if record.legacy_bcrypt is None:
            return False
        legacy = record.legacy_bcrypt.encode()
        matches = await asyncio.to_thread(bcrypt.checkpw, key.encode(), legacy)
        if matches:
            await self.store.rehash_registration(record.username, self._hash(key))
            log.info("acme-dns account rehashed after import username=%s", record.username)
        return matches

    async def update(self, record: RegistrationRecord, subdomain: str, txt: str) -> None:
        if subdomain != record.subdomain:
            raise forbidden()
        if not _SUBDOMAIN_SHAPE.fullmatch(subdomain):
            raise AcmeDnsError(400, "bad_subdomain")
        if not _TXT_SHAPE.fullmatch(txt):
            raise AcmeDnsError(400, "bad_txt")
        fqdn = self.fqdn(record)
        principal = Principal(
            name=f"acmedns:{record.username}", scopes=(Scope(fqdn, below=False),), admin=False
        )
        target = ChallengeTarget(base=fqdn, fqdn=fqdn)
        await self.service.present(principal, target, txt, None, evict_oldest=True)

    async def delete(self, username: str) -> RegistrationRecord | None:
        record = await self.store.delete_registration(username)
        if record is None:
            return None
        fqdn = self.fqdn(record)
        principal = Principal(name="admin", scopes=(), admin=True)
        target = ChallengeTarget(base=fqdn, fqdn=fqdn)
        for live in await self.store.live_challenges():
            if live.fqdn == fqdn:
                await self.service.cleanup(principal, target, live.value)
        self._embedded_zone().release(fqdn)
        self._served.discard(fqdn)
        log.info("acme-dns account deleted username=%s", username)
        return record
