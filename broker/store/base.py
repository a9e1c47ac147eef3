"""The records the broker keeps, and the one async interface every store implements."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from broker.store.changes import ChangeFeed, Leadership


class ChallengeState(enum.StrEnum):
    PRESENT = "present"
    REMOVED = "removed"
    EXPIRED = "expired"


class ChallengeIntent(enum.StrEnum):
    """A provider change recorded before it is made (write-ahead), cleared once it is
    done: whoever finds one left by a crash finishes it (see ChallengeService.finish)."""

    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """One TXT value the broker put at ``fqdn`` for its ``owner`` (a token name)."""

    id: str
    fqdn: str
    value: str
    zone: str
    provider: str
    owner: str
    created_at: float
    expires_at: float
    state: ChallengeState = ChallengeState.PRESENT
    ended_at: float | None = None
    delegated_from: str | None = None
    """The name asked for, when a CNAME there sent the value to ``fqdn``."""
    intent: ChallengeIntent | None = None
    """A provider change begun and not yet known to be done (providers that keep their
    own records only; the embedded zone is rebuilt from the store)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as stored: never the token itself, only its lookup key and SHA-256 digest."""

    name: str
    key: str
    digest: str
    scopes: tuple[str, ...]
    cidrs: tuple[str, ...]
    admin: bool
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    tsig_name: str | None = None
    """The token's TSIG key for RFC 2136 updates, if it has one: its name (absolute,
    lower case), algorithm and secret as kept (see broker.secretbox)."""
    tsig_algorithm: str | None = None
    tsig_secret: str | None = None
    one_shot: str | None = None
    """None for an ordinary token; for a one-shot token ``""`` until its first present,
    then the challenge it is bound to (``<fqdn> <value>``); see broker.auth."""
    persist: bool = False
    """The token may create dns-persist-01 grants for names in its scopes."""


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """An acme-dns account: it may write TXT values at ``<subdomain>.<zone>`` only.

    The password is kept as an HMAC (``key_hash``); an account imported from acme-dns
    carries its bcrypt hash instead until its first successful update."""

    username: str
    subdomain: str
    key_hash: str | None
    allowfrom: tuple[str, ...]
    created_at: float
    legacy_bcrypt: str | None = None


@dataclass(frozen=True, slots=True)
class AcmeAccountRecord:
    """The broker's own ACME account at one CA directory; the key PEM is encrypted."""

    directory: str
    url: str
    key_pem: str
    created_at: float


class OrderState(enum.StrEnum):
    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class CertificateOrderRecord:
    """A certificate signing request the broker runs through ACME for a token holder."""

    id: str
    owner: str
    names: tuple[str, ...]
    csr_pem: str
    directory: str
    state: OrderState
    created_at: float
    updated_at: float
    fullchain_pem: str | None = None
    error: str | None = None
    """JSON: the CA's problem document (or the broker's) when the order failed."""
    claimed_by: str | None = None
    """The replica running the order (or renewing it), while ``claimed_until`` has not
    passed; with no replica, the earliest time to try a failed renewal again."""
    claimed_until: float | None = None
    renew: bool = False
    """The broker keeps the certificate renewed, re-ordering with the same CSR."""
    not_before: float | None = None
    not_after: float | None = None
    renewals: int = 0
    renewal_error: str | None = None
    """Why the last renewal failed (JSON problem), cleared by the next that works."""


@dataclass(frozen=True, slots=True)
class AuditEventRecord:
    """One audited event (see broker.audit): never a secret, a token or a TXT value."""

    at: float
    actor: str
    """The token name, ``acmedns:<username>``, ``cli:<user>``, or ``-`` (unauthenticated)."""
    source: str
    """The client's address (HTTP: behind trusted proxies; DNS: the peer), or ``-``."""
    face: str
    action: str
    target: str
    result: str
    """``ok``, or the error's stable code."""
    id: int | None = None
    """Assigned by the store."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit events to read, newest first; ``before`` is the (at, id) of the last
    event of the previous page."""

    since: float | None = None
    until: float | None = None
    actor: str | None = None
    action: str | None = None
    limit: int = 100
    before: tuple[float, int] | None = None


class Store(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers a trivial query."""

    @abstractmethod
    async def create_token(self, token: TokenRecord) -> None:
        """Raise ConflictError when a live (unrevoked) token has the same name."""

    @abstractmethod
    async def token_by_key(self, key: str) -> TokenRecord | None: ...

    @abstractmethod
    async def token_by_tsig(self, name: str) -> TokenRecord | None:
        """The live (unrevoked) token whose TSIG key is called ``name``."""

    @abstractmethod
    async def list_tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]: ...

    @abstractmethod
    async def revoke_token(self, name: str, at: float) -> TokenRecord | None:
        """Revoke the live token called ``name``; None when there is none."""

    @abstractmethod
    async def rotate_token(self, name: str, rotated: TokenRecord) -> TokenRecord | None:
        """Give the live token called ``name`` (with ``rotated.key``) the digest and TSIG
        key of ``rotated``, keeping everything else; None when there is no such token;
        ConflictError when another live token has a TSIG key of that name."""

    @abstractmethod
    async def bind_one_shot(self, key: str, binding: str) -> bool:
        """Bind the live unused one-shot token ``key`` to ``binding``; True also when it
        is bound to that already, False when it is bound to another (or is not live)."""

    @abstractmethod
    async def spend_one_shot(self, key: str, binding: str, at: float) -> bool:
        """Revoke the live one-shot token ``key`` bound to ``binding``; False when it is
        not (bound to another, unused, or spent already)."""

    @abstractmethod
    async def purge_tokens(self, prefix: str, before: float) -> int:
        """Delete the tokens whose names start with ``prefix`` that expired before
        ``before`` (exchanged tokens, made in numbers); return how many."""

    @abstractmethod
    async def claim_replay(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record an OIDC ID token as used until ``expires_at``; False when it was used
        already and has not expired (a replay), on any replica."""

    @abstractmethod
    async def purge_replays(self, before: float) -> int:
        """Forget used ID tokens that expired before ``before``; return how many."""

    @abstractmethod
    async def add_audit_events(self, events: list[AuditEventRecord]) -> None:
        """Store audit events (one statement)."""

    @abstractmethod
    async def audit_events(self, query: AuditQuery) -> list[AuditEventRecord]:
        """The events that match, newest first, at most ``query.limit``."""

    @abstractmethod
    async def purge_audit(self, before: float) -> int:
        """Delete audit events older than ``before``; return how many."""

    @abstractmethod
    async def count_tokens(self) -> int:
        """Every token ever stored, revoked ones included."""

    @abstractmethod
    async def put_challenge(
        self, record: ChallengeRecord, max_values: int
    ) -> tuple[ChallengeRecord, bool] | None:
        """Insert a live record, or extend the lease of the live one with the same fqdn and
        value (keeping its intent). Returns the stored record and whether it
        was created; None (and nothing written) when the name already holds
        ``max_values`` other live values."""

    @abstractmethod
    async def live_challenge(self, fqdn: str, value: str) -> ChallengeRecord | None: ...

    @abstractmethod
    async def challenge(self, challenge_id: str) -> ChallengeRecord | None: ...

    @abstractmethod
    async def end_challenge(
        self, challenge_id: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        """Mark a live record removed or expired; None when it was not live."""

    @abstractmethod
    async def end_live(
        self, fqdn: str, value: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        """``live_challenge`` and ``end_challenge`` in one statement, for a removal that
        needs no mark; None when no such value was live."""

    @abstractmethod
    async def delete_challenge(self, challenge_id: str) -> None:
        """Forget a record entirely (undoing a present whose provider write failed)."""

    @abstractmethod
    async def intend(
        self, challenge_id: str, intent: ChallengeIntent | None
    ) -> ChallengeRecord | None:
        """Record (or, with None, clear) the provider change about to be made for a live
        record; None when the record is not live."""

    @abstractmethod
    async def unfinished_challenges(self, limit: int = 500) -> list[ChallengeRecord]:
        """Live records with a provider change begun and not known to be done."""

    @abstractmethod
    async def live_challenges(self) -> list[ChallengeRecord]: ...

    @abstractmethod
    async def live_under(self, label: str) -> list[ChallengeRecord]:
        """The live records whose name's first label is ``label``, oldest first."""

    @abstractmethod
    async def due_challenges(self, now: float, limit: int = 500) -> list[ChallengeRecord]:
        """Live records whose lease ended at or before ``now``, oldest first."""

    @abstractmethod
    async def count_live(self) -> int: ...

    @abstractmethod
    async def purge_ended(self, before: float) -> int:
        """Delete removed/expired records that ended before ``before``; return how many."""

    @abstractmethod
    async def oldest_live(self, fqdn: str) -> ChallengeRecord | None:
        """The live record at ``fqdn`` created first."""

    @abstractmethod
    async def secret(self, name: str, make: str) -> str:
        """The stored secret called ``name``; stores ``make`` first if there is none."""

    @abstractmethod
    async def create_registration(self, registration: RegistrationRecord) -> None: ...

    @abstractmethod
    async def registration(self, username: str) -> RegistrationRecord | None: ...

    @abstractmethod
    async def list_registrations(self) -> list[RegistrationRecord]: ...

    @abstractmethod
    async def delete_registration(self, username: str) -> RegistrationRecord | None: ...

    @abstractmethod
    async def acme_account(self, directory: str) -> AcmeAccountRecord | None: ...

    @abstractmethod
    async def put_acme_account(self, account: AcmeAccountRecord) -> AcmeAccountRecord:
        """Store the account unless one exists for the directory; return the stored one."""

    @abstractmethod
    async def create_order(self, order: CertificateOrderRecord) -> None: ...

    @abstractmethod
    async def order(self, order_id: str) -> CertificateOrderRecord | None: ...

    @abstractmethod
    async def pending_orders(self) -> list[CertificateOrderRecord]: ...

    @abstractmethod
    async def finish_order(
        self,
        order_id: str,
        state: OrderState,
        at: float,
        *,
        fullchain_pem: str | None = None,
        error: str | None = None,
        validity: tuple[float, float] | None = None,
    ) -> None:
        """End a pending order; ``validity`` is the certificate's (not before, not after)."""

    @abstractmethod
    async def claim_renewals(
        self, replica: str, now: float, until: float
    ) -> list[CertificateOrderRecord]:
        """Claim every kept certificate that is due (a third of its lifetime left) and
        that no replica is renewing or waiting to retry; return them."""

    @abstractmethod
    async def record_renewal(
        self,
        order_id: str,
        fullchain_pem: str,
        validity: tuple[float, float],
        at: float,
    ) -> None:
        """The order's certificate was renewed: keep the new one, release the claim."""

    @abstractmethod
    async def renewal_failed(self, order_id: str, error: str, retry_at: float) -> None:
        """Keep the current certificate; say why; try again no sooner than ``retry_at``."""

    @abstractmethod
    async def kept_certificates(self) -> list[CertificateOrderRecord]:
        """Every valid order the broker keeps renewed."""

    @abstractmethod
    async def rehash_registration(self, username: str, key_hash: str) -> None:
        """Replace a registration's password hash (and drop an imported bcrypt hash)."""

    @abstractmethod
    async def live_at(self, fqdn: str) -> list[ChallengeRecord]:
        """The live records at ``fqdn``, oldest first."""

    @abstractmethod
    async def put_report(self, challenge_id: str, report: str, at: float) -> None:
        """Keep a record's latest propagation report (JSON), replacing the one before."""

    @abstractmethod
    async def report(self, challenge_id: str) -> str | None: ...

    @abstractmethod
    async def claim_orders(
        self, replica: str, now: float, until: float
    ) -> list[CertificateOrderRecord]:
        """Claim, for ``replica`` until ``until``, every pending order whose claim has
        lapsed (its replica stopped or died); return them."""

    @abstractmethod
    async def extend_claim(self, order_id: str, replica: str, until: float) -> bool:
        """Extend ``replica``'s claim on a pending order; False when it holds none."""

    @abstractmethod
    async def release_claims(self, replica: str) -> None:
        """Let other replicas take over ``replica``'s pending orders at once."""

    @abstractmethod
    async def token_generation(self) -> int | None:
        """A number that changes whenever any token changes, written by any process; None
        when that cannot be known now (cached tokens must then not be trusted)."""

    def changes(self) -> ChangeFeed | None:
        """The feed of changes other replicas make, where the store has one."""
        return None

    @abstractmethod
    def leadership(self) -> Leadership:
        """Who among the replicas runs the reconciler."""

    @abstractmethod
    def rrset_lock(self, provider: str, fqdn: str) -> AbstractAsyncContextManager[None]:
        """Held across replicas while one of them rewrites the RRset at ``fqdn`` of a
        provider whose changes rewrite whole RRsets from a read of them."""
