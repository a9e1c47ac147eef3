"""RFC 2136 dynamic updates on the broker's DNS listeners, signed (RFC 8945) with a token's
TSIG key: every ACME client that speaks RFC 2136 (certbot-dns-rfc2136, lego rfc2136,
cert-manager, acme.sh dns_nsupdate, nsupdate in scripts) becomes a client, and the
update goes through whichever provider serves the name.

Only what DNS-01 needs is allowed: adding or deleting TXT values at ``_acme-challenge``
names in the key's scopes (or at the target a CNAME there points to), and deleting the
TXT RRset of such a name, which removes only the values this key's token presented.
Anything else — other types, names outside the zone, prerequisites — is refused. An
update is all or nothing, has the native API's semantics (appends, idempotent, leases),
and is applied before the answer is sent.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.update

from broker import audit
from broker.audit import AuditLog
from broker.auth import IPAddress, Principal, principal_of, unwrap
from broker.config import DnsUpdateSettings
from broker.delegation import authorized_target
from broker.dnsname import ChallengeTarget, is_subdomain, validate_value
from broker.errors import (
    BrokerError,
    ForbiddenNameError,
    ForbiddenSourceError,
    InvalidNameError,
    InvalidValueError,
    NoZoneError,
    UnauthorizedError,
)
from broker.metrics import Metrics
from broker.secretbox import SecretBox, SecretUnreadableError
from broker.service import ChallengeService
from broker.store import ChallengeRecord, TokenRecord
from broker.tsig import TsigKey

log = logging.getLogger(__name__)

ADD, DELETE, DELETE_OWN = "add", "delete", "delete-own"
FACE = "rfc2136"
UPDATE = "update"
"""The audit action of an update refused as a whole, before its changes were known."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    target: ChallengeTarget
    value: str = ""


class Refused(Exception):
    """The update cannot be applied; ``rcode`` says why, the message says it to the log."""

    def __init__(self, rcode: dns.rcode.Rcode, why: str) -> None:
        super().__init__(why)
        self.rcode = rcode


class UpdateFace:
    """The broker's side of the DNS listeners' signed messages (``DnsServer(signers=)``):
    TSIG keys are tokens' keys, and updates go through the challenge service."""

    def __init__(
        self,
        service: ChallengeService,
        box: SecretBox,
        settings: DnsUpdateSettings,
        metrics: Metrics,
        zones: Callable[[], Sequence[str]],
        *,
        clock: Callable[[], float] = time.time,
        audit_log: AuditLog | None = None,
    ) -> None:
        self._service = service
        self._audit = audit_log
        self._store = service.store
        self._box = box
        self._settings = settings
        self._metrics = metrics
        self._zones = zones
        self._clock = clock
        self.fudge = settings.fudge

    def report(self, outcome: str) -> None:
        self._metrics.dns_updates.labels(outcome).inc()

    def refused(self, source: str, key_name: str, why: str) -> None:
        """An update refused before its signature was verified: no actor is known."""
        if self._audit is not None:
            self._audit.record(FACE, UPDATE, key_name, actor=None, source=source,
                               result=why.lower())  # fmt: skip

    async def key(self, name: str) -> dns.tsig.Key | None:
        """The TSIG key of the live token that has one called ``name``."""
        record = await self._store.token_by_tsig(name)
        if record is None or record.tsig_secret is None or record.tsig_algorithm is None:
            return None
        if record.tsig_algorithm not in self._settings.algorithms:
            return None
        try:
            secret = self._box.open(record.tsig_secret, bound_to=record.key)
        except SecretUnreadableError as exc:
            log.warning("the TSIG key of token %s cannot be read: %s", record.name, exc)
            return None
        return TsigKey(name, record.tsig_algorithm, secret).dnspython()

    async def apply(
        self, message: dns.update.UpdateMessage, key_name: str, source: str
    ) -> dns.rcode.Rcode:
        """Apply a verified update signed with ``key_name``; the answer's rcode."""
        record = await self._store.token_by_tsig(key_name)
        changes: list[Change] = []
        try:
            if record is None:
                raise Refused(dns.rcode.NOTAUTH, f"the token of key {key_name} was revoked")
            principal = _principal(record, self._clock(), source)
            changes = await self._read(message, principal)
            await self._apply(changes, principal)
        except Refused as refused:
            result = dns.rcode.to_text(refused.rcode).lower()
            self._audit_changes(changes, record, source, result, key_name)
            log.info(
                "RFC 2136 update from %s with key %s refused (%s): %s",
                source, key_name, dns.rcode.to_text(refused.rcode), refused,
            )  # fmt: skip
            self.report("refused")
            return refused.rcode
        self._audit_changes(changes, record, source, audit.OK, key_name)
        log.info(
            "RFC 2136 update from %s by %s applied: %s", source, record.name,
            ", ".join(f"{c.kind} {c.target.fqdn}" for c in changes) or "nothing",
        )  # fmt: skip
        self.report("applied")
        return dns.rcode.NOERROR

    def _audit_changes(
        self,
        changes: list[Change],
        record: TokenRecord | None,
        source: str,
        result: str,
        key_name: str,
    ) -> None:
        """One event per change (an update refused before its changes were read: one
        ``update`` event, its target the key's name)."""
        if self._audit is None:
            return
        actor = None if record is None else record.name
        if not changes:
            self._audit.record(FACE, UPDATE, key_name, actor=actor, source=source, result=result)
        for change in changes:
            action = audit.PRESENT if change.kind == ADD else audit.CLEANUP
            self._audit.record(
                FACE, action, change.target.fqdn, actor=actor, source=source, result=result
            )

    async def _read(self, message: dns.update.UpdateMessage, principal: Principal) -> list[Change]:
        """Every change the update asks for, each checked; Refused if any is not allowed."""
        if len(message.zone) != 1 or message.zone[0].rdtype != dns.rdatatype.SOA:
            raise Refused(dns.rcode.FORMERR, "the zone section must hold one SOA question")
        zone = message.zone[0].name.to_text().lower()
        if message.zone[0].rdclass != dns.rdataclass.IN or zone not in self._zones():
            raise Refused(dns.rcode.NOTAUTH, f"{zone} is no zone of this broker")
        if message.prerequisite:
            raise Refused(dns.rcode.REFUSED, "prerequisites are not evaluated: send none")
        changes = []
        for rrset in message.update:
            name = rrset.name.to_text().lower()
            if not is_subdomain(name, zone):
                raise Refused(dns.rcode.NOTZONE, f"{name} is not in zone {zone}")
            if rrset.rdtype != dns.rdatatype.TXT:
                raise Refused(
                    dns.rcode.REFUSED,
                    f"only TXT values can be changed, not {dns.rdatatype.to_text(rrset.rdtype)}",
                )
            target = await self._target(principal, name)
            if rrset.deleting == dns.rdataclass.ANY:
                changes.append(Change(DELETE_OWN, target))
                continue
            kind = DELETE if rrset.deleting == dns.rdataclass.NONE else ADD
            for rdata in rrset:
                changes.append(Change(kind, target, _value(rdata)))
        return changes

    async def _target(self, principal: Principal, name: str) -> ChallengeTarget:
        delegation = self._service.delegation
        try:
            target = await authorized_target(principal, name, delegation)
            principal.require_challenge(target.base, target.fqdn)
        except (ForbiddenNameError, InvalidNameError) as exc:
            raise Refused(dns.rcode.REFUSED, exc.detail) from None
        return target

    async def _apply(self, changes: list[Change], principal: Principal) -> None:
        """All or nothing: when one change fails, those made before it are undone."""
        done: list[tuple[Change, list[ChallengeRecord]]] = []
        try:
            for change in changes:
                done.append((change, await self._change(change, principal)))
        except BrokerError as exc:
            await self._undo(done, principal)
            rcode = dns.rcode.NOTZONE if isinstance(exc, NoZoneError) else dns.rcode.SERVFAIL
            if exc.status < 500 and not isinstance(exc, NoZoneError):
                rcode = dns.rcode.REFUSED
            raise Refused(rcode, exc.detail) from None

    async def _change(self, change: Change, principal: Principal) -> list[ChallengeRecord]:
        """Make one change; the records it created (ADD) or removed (the deletes)."""
        service = self._service
        if change.kind == ADD:
            result = await service.present(principal, change.target, change.value, None)
            return [result.record] if result.created else []
        if change.kind == DELETE:
            removed = await service.cleanup(principal, change.target, change.value)
            return [] if removed is None else [removed]
        return await service.cleanup_own(principal, change.target)

    async def _undo(
        self, done: list[tuple[Change, list[ChallengeRecord]]], principal: Principal
    ) -> None:
        for change, records in reversed(done):
            for record in records:
                try:
                    if change.kind == ADD:
                        await self._service.cleanup(principal, change.target, record.value)
                    else:
                        await self._service.present(principal, change.target, record.value, None)
                except BrokerError as exc:
                    log.warning("could not undo %s of %s: %s", change.kind, record.fqdn, exc)


def _principal(record: TokenRecord, now: float, source: str) -> Principal:
    try:
        return principal_of(record, now, lambda: _address(source))
    except UnauthorizedError as exc:
        raise Refused(dns.rcode.NOTAUTH, exc.detail) from None
    except ForbiddenSourceError as exc:
        raise Refused(dns.rcode.REFUSED, exc.detail) from None


def _value(rdata: object) -> str:
    strings = getattr(rdata, "strings", ())
    try:
        value = b"".join(strings).decode("ascii")
        return validate_value(value)
    except (UnicodeDecodeError, InvalidValueError) as exc:
        raise Refused(dns.rcode.REFUSED, f"not a DNS-01 value: {exc}") from None


def _address(source: str) -> IPAddress | None:
    try:
        return unwrap(ipaddress.ip_address(source))
    except ValueError:
        return None
