"""Records as SQL rows and back: the column orders every SQL store shares."""

from __future__ import annotations

import json
from typing import Any

from broker.store.base import (
    AuditEventRecord,
    CertificateOrderRecord,
    ChallengeIntent,
    ChallengeRecord,
    ChallengeState,
    OrderState,
    RegistrationRecord,
    TokenRecord,
)

Row = tuple[Any, ...]

TOKEN_COLUMNS = ", ".join(  # one name per column: ruff reads a list of them as a password
    ("name", "key", "digest", "scopes", "cidrs", "admin", "created_at", "expires_at",
     "revoked_at", "tsig_name", "tsig_algorithm", "tsig_secret", "one_shot", "persist")
)  # fmt: skip
CHALLENGE_COLUMNS = (
    "id, fqdn, value, zone, provider, owner, created_at, expires_at, state, ended_at, "
    "delegated_from, intent"
)
REGISTRATION_COLUMNS = "username, subdomain, key_hash, allowfrom, created_at, legacy_bcrypt"
ACCOUNT_COLUMNS = "directory, url, key_pem, created_at"
ORDER_COLUMNS = (
    "id, owner, names, csr_pem, directory, state, created_at, updated_at, fullchain_pem, error, "
    "claimed_by, claimed_until, renew, not_before, not_after, renewals, renewal_error"
)

AUDIT_COLUMNS = "at, actor, source, face, action, target, result"


def token_row(token: TokenRecord) -> tuple[Any, ...]:
    return (
        token.name,
        token.key,
        token.digest,
        json.dumps(list(token.scopes)),
        json.dumps(list(token.cidrs)),
        int(token.admin),
        token.created_at,
        token.expires_at,
        token.revoked_at,
        token.tsig_name,
        token.tsig_algorithm,
        token.tsig_secret,
        token.one_shot,
        int(token.persist),
    )


def token_from_row(row: tuple[Any, ...]) -> TokenRecord:
    name, key, digest, scopes, cidrs, admin, created_at, expires_at, revoked_at = row[:9]
    tsig_name, tsig_algorithm, tsig_secret, one_shot, persist = row[9:]
    return TokenRecord(
        name=name,
        key=key,
        digest=digest,
        scopes=tuple(json.loads(scopes)),
        cidrs=tuple(json.loads(cidrs)),
        admin=bool(admin),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
        tsig_name=tsig_name,
        tsig_algorithm=tsig_algorithm,
        tsig_secret=tsig_secret,
        one_shot=one_shot,
        persist=bool(persist),
    )


def challenge_row(record: ChallengeRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.fqdn,
        record.value,
        record.zone,
        record.provider,
        record.owner,
        record.created_at,
        record.expires_at,
        record.state.value,
        record.ended_at,
        record.delegated_from,
        None if record.intent is None else record.intent.value,
    )


def challenge_from_row(row: tuple[Any, ...]) -> ChallengeRecord:
    id_, fqdn, value, zone, provider, owner, created_at, expires_at, state, ended_at = row[:10]
    via, intent = row[10:]
    return ChallengeRecord(
        id=id_,
        fqdn=fqdn,
        value=value,
        zone=zone,
        provider=provider,
        owner=owner,
        created_at=created_at,
        expires_at=expires_at,
        state=ChallengeState(state),
        ended_at=ended_at,
        delegated_from=via,
        intent=None if intent is None else ChallengeIntent(intent),
    )


def order_row(order: CertificateOrderRecord) -> Row:
    return (
        order.id,
        order.owner,
        json.dumps(list(order.names)),
        order.csr_pem,
        order.directory,
        order.state.value,
        order.created_at,
        order.updated_at,
        order.fullchain_pem,
        order.error,
        order.claimed_by,
        order.claimed_until,
        int(order.renew),
        order.not_before,
        order.not_after,
        order.renewals,
        order.renewal_error,
    )


def order_from_row(row: Row) -> CertificateOrderRecord:
    id_, owner, names, csr_pem, directory, state, created, updated, fullchain, error = row[:10]
    by, until, renew, not_before, not_after, renewals, renewal_error = row[10:]
    return CertificateOrderRecord(
        id=id_,
        owner=owner,
        names=tuple(json.loads(names)),
        csr_pem=csr_pem,
        directory=directory,
        state=OrderState(state),
        created_at=created,
        updated_at=updated,
        fullchain_pem=fullchain,
        error=error,
        claimed_by=by,
        claimed_until=until,
        renew=bool(renew),
        not_before=not_before,
        not_after=not_after,
        renewals=renewals,
        renewal_error=renewal_error,
    )


def registration_row(registration: RegistrationRecord) -> Row:
    return (
        registration.username,
        registration.subdomain,
        registration.key_hash,
        json.dumps(list(registration.allowfrom)),
        registration.created_at,
        registration.legacy_bcrypt,
    )


def registration_from_row(row: Row) -> RegistrationRecord:
    username, subdomain, key_hash, allowfrom, created_at, legacy_bcrypt = row
    return RegistrationRecord(
        username=username,
        subdomain=subdomain,
        key_hash=key_hash,
        allowfrom=tuple(json.loads(allowfrom)),
        created_at=created_at,
        legacy_bcrypt=legacy_bcrypt,
    )


def audit_row(event: AuditEventRecord) -> Row:
    return (
        event.at,
        event.actor,
        event.source,
        event.face,
        event.action,
        event.target,
        event.result,
    )


def audit_from_row(row: Row) -> AuditEventRecord:
    """A row of ``id`` followed by AUDIT_COLUMNS."""
    id_, at, actor, source, face, action, target, result = row
    return AuditEventRecord(at, actor, source, face, action, target, result, id=int(id_))
