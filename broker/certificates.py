"""POST /v1/certificates: the broker signs a token holder's CSR through ACME with its own
account, so the holder needs neither a DNS key nor an ACME account, and its private key
never leaves it.

Every CSR name is checked against the token's scope before any ACME call. Orders run as
background tasks owned by this service; their state and result are stored. The broker's
account per CA directory is created on first use; its key is kept encrypted with
``acme.account_key_passphrase`` (or a generated key file beside the store).

An order may ask to be kept renewed (``renew``): the leader then re-orders with the same
CSR once a third of the certificate's lifetime is left, while the owner's token is still
live and still covers the names, and stores the new certificate in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from broker import audit
from broker.acme import (
    AccountKey,
    AcmeClient,
    AcmeError,
    AcmeProblem,
    AuthorizationFailedError,
    ExternalAccountBinding,
    KeyFormatError,
    NotPropagatedError,
    OrderFailedError,
    PresentedChallenge,
    SignedCertificate,
    SolverError,
    csr_names,
    generate_account_key,
    load_certificate,
    load_csr,
    servers_summary,
    sign_csr,
    ssl_context,
)
from broker.audit import AuditLog
from broker.auth import Principal
from broker.config import AcmeSettings
from broker.dnsname import ChallengeTarget, Scope
from broker.errors import BrokerError, FieldProblem, InvalidRequestError, NotFoundError
from broker.metrics import Metrics
from broker.service import ChallengeService
from broker.store import AcmeAccountRecord, CertificateOrderRecord, OrderState, Store
from broker.watch import PropagationWatch

log = logging.getLogger(__name__)

MAX_CSR_NAMES = 100
FACE = "acme"
"""The audit log's face of what the broker's ACME client does on its own."""


class ServiceSolver:
    """A DnsSolver over this broker's own service: same scopes, leases and propagation
    checks as the HTTP API."""

    def __init__(
        self,
        service: ChallengeService,
        watch: PropagationWatch | None,
        principal: Principal,
        audit_log: AuditLog | None = None,
    ) -> None:
        self._service = service
        self._watch = watch
        self._principal = principal
        self._audit = audit_log
        self._records: dict[tuple[str, str], Any] = {}

    def _record(self, action: str, domain: str, result: str) -> None:
        if self._audit is not None:
            fqdn = ChallengeTarget.from_domain(domain).fqdn
            self._audit.record(FACE, action, fqdn, actor=self._principal.name, result=result)

    async def present(self, domain: str, value: str, /) -> PresentedChallenge:
        try:
            result = await self._service.present(
                self._principal, ChallengeTarget.from_domain(domain), value, None
            )
        except BrokerError as exc:
            self._record(audit.PRESENT, domain, exc.code)
            raise SolverError(domain, exc.detail, status=exc.status, code=exc.code) from None
        self._record(audit.PRESENT, domain, audit.OK)
        self._records[(domain, value)] = result.record
        return PresentedChallenge(domain, value, result.record.fqdn, result.record.id)

    async def wait_propagated(self, handle: PresentedChallenge, seconds: float, /) -> str | None:
        record = self._records.get((handle.domain, handle.value))
        if self._watch is None or record is None:
            return None
        report = await self._watch.wait(record, seconds)
        if not report.ready:
            raise NotPropagatedError(handle.domain, report.error or "not served everywhere yet")
        return servers_summary(report.to_json()["servers"])

    async def cleanup(self, handle: PresentedChallenge, /) -> None:
        try:
            target = ChallengeTarget.from_domain(handle.domain)
            await self._service.cleanup(self._principal, target, handle.value)
        except BrokerError as exc:
            self._record(audit.CLEANUP, handle.domain, exc.code)
            raise SolverError(handle.domain, exc.detail, status=exc.status, code=exc.code) from None
        self._record(audit.CLEANUP, handle.domain, audit.OK)


CLAIM_SECONDS = 30.0
"""How long a replica's claim on an order it runs lasts; it renews it a third of the way."""
RENEWAL_RETRY_SECONDS = 3600.0
"""After a failed renewal, the next try is no sooner than this (or the CA's Retry-After)."""


class CertificateService:
    """Runs certificate orders. The replica that runs one holds a claim on it in the
    store; when that replica stops or dies, the claim lapses and the leader runs the
    order again from its CSR (``resume``), so no order is lost with a replica."""

    def __init__(
        self,
        store: Store,
        service: ChallengeService,
        watch: PropagationWatch | None,
        settings: AcmeSettings,
        *,
        replica: str = "local",
        metrics: Metrics | None = None,
        audit_log: AuditLog | None = None,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._audit = audit_log
        self._service = service
        self._watch = watch
        self._settings = settings
        self._replica = replica
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._clients: dict[str, AcmeClient] = {}
        self._account_lock = asyncio.Lock()

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        with contextlib.suppress(BrokerError):
            await self.store.release_claims(self._replica)

    async def submit(
        self, principal: Principal, csr_pem: str, *, renew: bool = False
    ) -> CertificateOrderRecord:
        if "\x00" in csr_pem:
            detail = "the CSR holds a NUL character: send the PEM text alone"
            raise InvalidRequestError(detail, problems=[FieldProblem("/csr", detail)])
        try:
            csr = load_csr(csr_pem)
        except KeyFormatError as exc:
            raise InvalidRequestError(str(exc), problems=[FieldProblem("/csr", str(exc))]) from None
        names = csr_names(csr)
        if not names or len(names) > MAX_CSR_NAMES:
            detail = f"the CSR must name 1 to {MAX_CSR_NAMES} DNS names"
            raise InvalidRequestError(detail, problems=[FieldProblem("/csr", detail)])
        for name in names:
            target = ChallengeTarget.from_domain(name)
            principal.require_challenge(target.base, target.fqdn)
        now = time.time()
        order = CertificateOrderRecord(
            id=secrets.token_urlsafe(12),
            owner=principal.name,
            names=tuple(names),
            csr_pem=csr_pem,
            directory=self._settings.directory,
            state=OrderState.PENDING,
            created_at=now,
            updated_at=now,
            claimed_by=self._replica,
            claimed_until=now + CLAIM_SECONDS,
            renew=renew,
        )
        await self.store.create_order(order)
        self._start(order, csr)
        log.info("certificate order submitted id=%s names=%s owner=%s renew=%s", order.id,
                 ",".join(names), principal.name, renew)  # fmt: skip
        return order

    async def resume(self) -> int:
        """Run the pending orders whose replica stopped (their claims lapsed); the
        owner's token must still be live. Return how many were taken over."""
        now = time.time()
        claimed = await self.store.claim_orders(self._replica, now, now + CLAIM_SECONDS)
        if not claimed:
            return 0
        live = {t.name for t in await self.store.list_tokens() if _live(t.expires_at, now)}
        for order in claimed:
            if order.id in self._tasks:
                continue
            if order.owner not in live:
                await self.store.finish_order(
                    order.id, OrderState.INVALID, now,
                    error=_problem_json(
                        "interrupted", "its replica stopped and the token that submitted it "
                        "is no longer valid; submit the CSR again with a valid token",
                    ),
                )  # fmt: skip
                self._record(audit.CERTIFICATE_FAILED, order, "interrupted")
                continue
            log.info("resuming certificate order id=%s of %s", order.id, order.owner)
            self._start(order, load_csr(order.csr_pem))
        return len(claimed)

    async def renew_due(self) -> int:
        """Renew every kept certificate that is due and not already being renewed or
        waiting to retry (a leader duty). Return how many were started."""
        now = time.time()
        due = await self.store.claim_renewals(self._replica, now, now + CLAIM_SECONDS)
        tokens = {t.name: t for t in await self.store.list_tokens()} if due else {}
        started = 0
        for order in due:
            if order.id in self._tasks:
                continue
            owner = tokens.get(order.owner)
            if owner is None or not _live(owner.expires_at, now):
                await self._renewal_failed(order, _problem_json(
                    "owner-not-valid", f"the token {order.owner!r} that asked for renewal is "
                    "revoked, expired or gone; submit the CSR again with a valid token",
                ))  # fmt: skip
                continue
            principal = Principal(owner.name, tuple(Scope.parse(p) for p in owner.scopes),
                                  owner.admin)  # fmt: skip
            uncovered = principal.uncovered(order.names)
            if uncovered:
                await self._renewal_failed(order, _problem_json(
                    "owner-not-allowed", f"the token {order.owner!r} no longer covers "
                    f"{', '.join(uncovered)}",
                ))  # fmt: skip
                continue
            log.info("renewing certificate id=%s names=%s", order.id, ",".join(order.names))
            self._start(order, load_csr(order.csr_pem), renewal=True)
            started += 1
        await self._publish_expiry()
        return started

    async def _renewal_failed(
        self, order: CertificateOrderRecord, error: str, retry_after: float | None = None
    ) -> None:
        wait = max(RENEWAL_RETRY_SECONDS, retry_after or 0.0)
        log.warning("certificate renewal failed id=%s, next try in %.0fs: %s", order.id, wait,
                    json.loads(error).get("detail"))  # fmt: skip
        await self.store.renewal_failed(order.id, error, time.time() + wait)
        self._record(audit.CERTIFICATE_RENEWAL_FAILED, order, _error_code(error))
        if self._metrics is not None:
            self._metrics.certificate_renewals.labels("failed").inc()

    async def _publish_expiry(self) -> None:
        if self._metrics is None:
            return
        gauge = self._metrics.certificate_expiry
        gauge.clear()
        for order in await self.store.kept_certificates():
            if order.not_after is not None:
                gauge.labels(order.id, order.names[0]).set(order.not_after)

    def _start(
        self,
        order: CertificateOrderRecord,
        csr: x509.CertificateSigningRequest,
        *,
        renewal: bool = False,
    ) -> None:
        task = asyncio.create_task(self._claimed(order, csr, renewal), name=f"order-{order.id}")
        self._tasks[order.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(order.id, None))

    async def _claimed(
        self, order: CertificateOrderRecord, csr: x509.CertificateSigningRequest, renewal: bool
    ) -> None:
        """Run the order (or its renewal) while renewing this replica's claim on it."""
        renewing = asyncio.create_task(self._renew_claim(order.id))
        try:
            if renewal:
                await self._renew(order, csr)
            else:
                await self._run(order, csr)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_claim(self, order_id: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_SECONDS / 3)
            with contextlib.suppress(BrokerError):
                await self.store.extend_claim(order_id, self._replica, time.time() + CLAIM_SECONDS)

    def _record(self, action: str, order: CertificateOrderRecord, result: str = audit.OK) -> None:
        if self._audit is not None:
            self._audit.record(FACE, action, order.id, actor=order.owner, result=result)

    async def get(self, principal: Principal, order_id: str) -> CertificateOrderRecord:
        order = await self.store.order(order_id)
        if order is None or not (principal.admin or order.owner == principal.name):
            raise NotFoundError(f"no certificate order {order_id!r} visible to this token")
        return order

    async def wait(self, order_id: str, seconds: float) -> None:
        task = self._tasks.get(order_id)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), seconds)

    async def _run(
        self, order: CertificateOrderRecord, csr: x509.CertificateSigningRequest
    ) -> None:
        try:
            signed = await self._sign(order, csr)
        except (AcmeError, TimeoutError, OSError) as exc:
            log.warning("certificate order failed id=%s: %s", order.id, exc)
            error = _error_json(exc)
            await self.store.finish_order(order.id, OrderState.INVALID, time.time(), error=error)
            self._record(audit.CERTIFICATE_FAILED, order, _error_code(error))
            return
        await self.store.finish_order(
            order.id, OrderState.VALID, time.time(),
            fullchain_pem=signed.fullchain_pem, validity=_validity(signed.fullchain_pem),
        )  # fmt: skip
        self._record(audit.CERTIFICATE_ISSUED, order)
        log.info("certificate order valid id=%s issuer=%s", order.id, signed.issuer)

    async def _renew(
        self, order: CertificateOrderRecord, csr: x509.CertificateSigningRequest
    ) -> None:
        """Re-order with the same CSR; the current certificate stays until one is issued."""
        try:
            signed = await self._sign(order, csr, replaces=order.fullchain_pem)
        except (AcmeError, TimeoutError, OSError) as exc:
            await self._renewal_failed(order, _error_json(exc), getattr(exc, "retry_after", None))
            return
        await self.store.record_renewal(
            order.id, signed.fullchain_pem, _validity(signed.fullchain_pem), time.time()
        )
        self._record(audit.CERTIFICATE_RENEWED, order)
        if self._metrics is not None:
            self._metrics.certificate_renewals.labels("renewed").inc()
        log.info("certificate renewed id=%s issuer=%s", order.id, signed.issuer)
        await self._publish_expiry()

    async def _sign(
        self,
        order: CertificateOrderRecord,
        csr: x509.CertificateSigningRequest,
        *,
        replaces: str | None = None,
    ) -> SignedCertificate:
        principal = Principal(
            name=order.owner,
            scopes=tuple(Scope(ChallengeTarget.from_domain(n).base, False) for n in order.names),
            admin=False,
        )
        solver = ServiceSolver(self._service, self._watch, principal, self._audit)
        client = await self._client(order.directory)
        return await asyncio.wait_for(
            sign_csr(
                client, csr, solver,
                replaces=replaces,
                propagation_timeout=self._settings.propagation_timeout,
            ),
            self._settings.order_timeout,
        )  # fmt: skip

    async def _client(self, directory: str) -> AcmeClient:
        async with self._account_lock:
            client = self._clients.get(directory)
            if client is not None:
                return client
            passphrase = self._passphrase()
            stored = await self.store.acme_account(directory)
            tls = ssl_context(self._settings.ca_bundle)
            if stored is not None:
                key = AccountKey.from_pem(stored.key_pem.encode(), passphrase)
                client = AcmeClient(directory, key, account_url=stored.url, ssl=tls)
            else:
                client = await self._new_account(directory, passphrase, tls)
            self._clients[directory] = client
            return client

    async def _new_account(self, directory: str, passphrase: bytes, tls: Any) -> AcmeClient:
        key = generate_account_key()
        client = AcmeClient(directory, key, ssl=tls)
        eab = None
        if self._settings.eab_kid and self._settings.eab_hmac is not None:
            eab = ExternalAccountBinding(
                self._settings.eab_kid, self._settings.eab_hmac.get_secret_value()
            )
        contact = (f"mailto:{self._settings.email}",) if self._settings.email else ()
        try:
            account = await client.new_account(contact=contact, eab=eab)
        except BaseException:
            await client.close()
            raise
        record = AcmeAccountRecord(
            directory, account.url, key.to_pem(passphrase).decode(), time.time()
        )
        await self.store.put_acme_account(record)
        log.info("ACME account created at %s", directory)
        return client

    def _passphrase(self) -> bytes:
        configured = self._settings.account_key_passphrase
        if configured is not None:
            return configured.get_secret_value().encode()
        return read_or_create_secret(self._settings.passphrase_file)


def read_or_create_secret(path: Path) -> bytes:
    """A random secret kept in ``path`` (mode 0600), made on first use."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret + b"\n")
    return secret


def _live(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


def _validity(fullchain_pem: str) -> tuple[float, float]:
    """The leaf certificate's (not before, not after) as Unix times."""
    leaf = load_certificate(fullchain_pem.encode())
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


def _error_code(error: str) -> str:
    """The last part of a stored problem's type: ``rejectedIdentifier``, ``acme-timeout``."""
    try:
        kind = json.loads(error).get("type")
    except (ValueError, AttributeError):
        kind = None
    return str(kind).rsplit(":", 1)[-1] if kind else "failed"


def _problem_json(code: str, detail: str, **extra: Any) -> str:
    return json.dumps({"type": f"urn:dns01-broker:problem:{code}", "detail": detail, **extra})


def _error_json(exc: BaseException) -> str:
    problem = exc.problem if isinstance(exc, AuthorizationFailedError | OrderFailedError) else exc
    if isinstance(problem, AcmeProblem):
        document: dict[str, Any] = {"type": problem.type, "detail": problem.detail}
        if problem.status is not None:
            document["status"] = problem.status
        if problem.subproblems:
            document["subproblems"] = [
                {"type": sub.type, "detail": sub.detail, "identifier": sub.identifier}
                for sub in problem.subproblems
            ]
        return json.dumps(document)
    if isinstance(exc, TimeoutError):
        return _problem_json("acme-timeout", str(exc) or "the order took too long")
    return _problem_json("acme-failed", str(exc))
