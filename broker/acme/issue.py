"""Issuance: order, answer every dns-01 challenge in parallel through a DnsSolver,
finalize, download (the preferred chain), and always clean up; and revocation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.acme.client import AcmeClient, identifier_for
from broker.acme.csr import (
    ParsedChain,
    certificate_to_pem,
    choose_chain,
    csr_der,
    csr_names,
    load_certificate,
    make_csr,
)
from broker.acme.errors import (
    AuthorizationFailedError,
    ChallengeUnavailableError,
    OrderFailedError,
)
from broker.acme.events import Emitter, EventCallback, EventKind
from broker.acme.jws import dns01_txt_value
from broker.acme.keys import KeyType, PrivateKey, generate_private_key, private_key_to_pem
from broker.acme.messages import Authorization, Challenge, Status
from broker.acme.renewal import CertificateInput, ari_certificate_id
from broker.acme.solver import DnsSolver, PersistGrantor, PresentedChallenge

log = logging.getLogger(__name__)

DNS01 = "dns-01"
DNS_PERSIST01 = "dns-persist-01"
DEFAULT_PROPAGATION_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class SignedCertificate:
    """A certificate as issued: PEM of the leaf, of the chain above it, and of both."""

    certificate_pem: str
    chain_pem: str
    fullchain_pem: str
    not_before: datetime
    not_after: datetime
    names: tuple[str, ...]
    issuer: str
    url: str

    @classmethod
    def from_chain(cls, chain: ParsedChain, url: str) -> SignedCertificate:
        leaf = certificate_to_pem([chain.leaf])
        rest = certificate_to_pem(chain.issuers)
        return cls(
            certificate_pem=leaf,
            chain_pem=rest,
            fullchain_pem=leaf + rest,
            not_before=chain.not_before,
            not_after=chain.not_after,
            names=_dns_names(chain.leaf),
            issuer=chain.top_issuer,
            url=url,
        )


@dataclass(frozen=True, slots=True)
class IssuedCertificate(SignedCertificate):
    """A certificate and the private key this client generated for it."""

    private_key_pem: str

    @classmethod
    def with_key(cls, signed: SignedCertificate, private_key_pem: str) -> IssuedCertificate:
        return cls(
            certificate_pem=signed.certificate_pem,
            chain_pem=signed.chain_pem,
            fullchain_pem=signed.fullchain_pem,
            not_before=signed.not_before,
            not_after=signed.not_after,
            names=signed.names,
            issuer=signed.issuer,
            url=signed.url,
            private_key_pem=private_key_pem,
        )


def _dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(sans.value.get_values_for_type(x509.DNSName))


async def issue(
    client: AcmeClient,
    identifiers: Sequence[str],
    solver: DnsSolver,
    key_type: KeyType | str = KeyType.EC256,
    *,
    private_key: PrivateKey | None = None,
    replaces: CertificateInput | None = None,
    preferred_chain: str | None = None,
    on_event: EventCallback | None = None,
    propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT,
    profile: str | None = None,
    persist: PersistGrantor | None = None,
) -> IssuedCertificate:
    """A certificate for ``identifiers`` (``*.`` names allowed) with a new key of
    ``key_type`` (or ``private_key``); the first name is the CN when it fits.

    ``replaces``: the certificate being renewed (sent as RFC 9773 ``replaces`` when the
    CA offers renewalInfo). ``preferred_chain``: the issuer common name of the chain to
    prefer among the alternates (the default chain when none matches). ``profile``: a
    certificate profile the CA's directory offers (``Directory.profiles``).
    ``persist``: answer with dns-persist-01 where the CA offers it (see ``authorize``).
    """
    names = [identifier_for(name).value for name in identifiers]
    key: PrivateKey = (
        private_key
        if private_key is not None
        else await asyncio.to_thread(generate_private_key, KeyType(key_type))
    )
    csr = await asyncio.to_thread(make_csr, key, names)
    signed = await order_certificate(
        client,
        names,
        csr_der(csr),
        solver,
        replaces=replaces,
        preferred_chain=preferred_chain,
        on_event=on_event,
        propagation_timeout=propagation_timeout,
        profile=profile,
        persist=persist,
    )
    return IssuedCertificate.with_key(signed, private_key_to_pem(key).decode())


async def sign_csr(
    client: AcmeClient,
    csr: x509.CertificateSigningRequest,
    solver: DnsSolver,
    *,
    replaces: CertificateInput | None = None,
    preferred_chain: str | None = None,
    on_event: EventCallback | None = None,
    propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT,
    profile: str | None = None,
) -> SignedCertificate:
    """A certificate for a caller's CSR (its key never leaves the caller): the order
    names are the CSR's CN and DNS SANs."""
    return await order_certificate(
        client,
        csr_names(csr),
        csr.public_bytes(serialization.Encoding.DER),
        solver,
        replaces=replaces,
        preferred_chain=preferred_chain,
        on_event=on_event,
        propagation_timeout=propagation_timeout,
        profile=profile,
    )


async def order_certificate(
    client: AcmeClient,
    identifiers: Sequence[str],
    csr: bytes,
    solver: DnsSolver,
    *,
    replaces: CertificateInput | None = None,
    preferred_chain: str | None = None,
    on_event: EventCallback | None = None,
    propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT,
    profile: str | None = None,
    persist: PersistGrantor | None = None,
) -> SignedCertificate:
    """The whole flow for a DER ``csr`` that names exactly ``identifiers``."""
    emit = Emitter(on_event)
    replaced = None if replaces is None else _replaces_id(replaces)
    order = await client.new_order(identifiers, replaces=replaced, profile=profile)
    log.info("ACME order %s for %s", order.url, ", ".join(identifiers))
    emit(EventKind.ORDER_CREATED, None, order.url)
    authorizations = await asyncio.gather(
        *(client.get_authorization(url) for url in order.authorizations)
    )
    await authorize(
        client,
        authorizations,
        solver,
        on_event=emit,
        propagation_timeout=propagation_timeout,
        persist=persist,
    )
    order = await client.poll_order(order.url)
    if order.status is not Status.READY:
        raise OrderFailedError(order.url, order.status.value, order.error)
    emit(EventKind.FINALIZING, None, order.finalize)
    order = await client.finalize(order, csr)
    if order.status is not Status.VALID or order.certificate is None:
        order = await client.poll_order(order.url, first_wait=order.retry_after)
    if order.status is not Status.VALID or order.certificate is None:
        raise OrderFailedError(order.url, order.status.value, order.error)
    chain = await _download(client, order.certificate, preferred_chain)
    log.info("certificate %s issued, valid until %s", order.certificate, chain.not_after)
    emit(EventKind.CERTIFICATE_DOWNLOADED, None, f"{order.certificate} (issuer {chain.top_issuer})")
    return SignedCertificate.from_chain(chain, order.certificate)


def _replaces_id(replaces: CertificateInput) -> str:
    if isinstance(replaces, str) and "-----BEGIN" not in replaces:
        return replaces
    return ari_certificate_id(replaces)


async def authorize(
    client: AcmeClient,
    authorizations: Sequence[Authorization],
    solver: DnsSolver,
    *,
    on_event: EventCallback | Emitter | None = None,
    propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT,
    persist: PersistGrantor | None = None,
) -> None:
    """Answer the dns-01 challenge of every pending authorization at the same time; the
    first failure cancels the others. Every value presented is cleaned up, whatever
    happens (failure, cancellation). With ``persist``, an authorization whose CA offers
    dns-persist-01 is answered by the account's standing grant instead (made or reused,
    and left in place); the others fall back to dns-01, each with a clear event."""
    emit = on_event if isinstance(on_event, Emitter) else Emitter(on_event)
    pending: list[tuple[Authorization, Challenge]] = []
    persisted: list[tuple[Authorization, Challenge]] = []
    for authorization in authorizations:
        if authorization.status is Status.VALID:
            emit(EventKind.AUTHORIZATION_VALID, authorization.domain, "already valid")
            continue
        if authorization.status is not Status.PENDING:
            raise AuthorizationFailedError(
                authorization.domain,
                authorization.url,
                authorization.status.value,
                authorization.error,
            )
        emit(EventKind.AUTHORIZATION_PENDING, authorization.domain, authorization.url)
        if persist is not None:
            challenge = _persist01(authorization, emit)
            if challenge is not None:
                persisted.append((authorization, challenge))
                continue
        pending.append((authorization, _dns01(authorization)))
    if persisted:
        assert persist is not None
        await _answer_persisted(client, persist, persisted, emit, propagation_timeout)
    if pending:
        await _ChallengeRound(client, solver, emit, propagation_timeout).run(pending)


def _dns01(authorization: Authorization) -> Challenge:
    challenge = authorization.challenge(DNS01)
    if challenge is None or challenge.token is None:
        offered = tuple(c.type for c in authorization.challenges)
        raise ChallengeUnavailableError(authorization.domain, offered)
    return challenge


def _persist01(authorization: Authorization, emit: Emitter) -> Challenge | None:
    challenge = authorization.challenge(DNS_PERSIST01)
    if challenge is not None and challenge.issuer_domain_names:
        return challenge
    offered = ", ".join(c.type for c in authorization.challenges) or "nothing"
    if challenge is None:
        detail = (
            f"the CA offers no {DNS_PERSIST01} here (only {offered}): answering {DNS01} instead"
        )
    else:
        detail = (
            f"the CA's {DNS_PERSIST01} challenge names no issuer-domain-names: answering "
            f"{DNS01} instead"
        )
    log.warning("%s: %s", authorization.domain, detail)
    emit(EventKind.PERSIST_UNAVAILABLE, authorization.domain, detail)
    return None


async def _answer_persisted(
    client: AcmeClient,
    persist: PersistGrantor,
    persisted: Sequence[tuple[Authorization, Challenge]],
    emit: Emitter,
    propagation_timeout: float,
) -> None:
    """One grant per name and issuer (a wildcard authorization makes it a wildcard grant,
    which covers the name too), each served everywhere before any challenge is answered;
    then every challenge answered with ``{}`` at once."""
    if client.account_url is None:
        await client.find_account()
    account = client.account_url
    assert account is not None
    grants: dict[tuple[str, str], bool] = {}
    for authorization, challenge in persisted:
        key = (authorization.identifier.value, challenge.issuer_domain_names[0])
        grants[key] = grants.get(key, False) or authorization.wildcard
    for (name, issuer), wildcard in grants.items():
        served = await persist.grant(name, issuer, account, wildcard, propagation_timeout)
        emit(EventKind.PERSIST_GRANTED, name, served)

    async def answer(authorization: Authorization, challenge: Challenge) -> None:
        await client.answer_challenge(challenge)
        emit(EventKind.CHALLENGE_ANSWERED, authorization.domain, challenge.url)
        final = await client.poll_authorization(authorization.url)
        if final.status is Status.VALID:
            emit(EventKind.AUTHORIZATION_VALID, authorization.domain, DNS_PERSIST01)
            return
        emit(EventKind.AUTHORIZATION_INVALID, authorization.domain,
             str(final.error or final.status.value))  # fmt: skip
        raise AuthorizationFailedError(
            authorization.domain, final.url, final.status.value, final.error
        )

    try:
        async with asyncio.TaskGroup() as group:
            for authorization, challenge in persisted:
                group.create_task(answer(authorization, challenge))
    except BaseExceptionGroup as failures:
        raise _first_failure(failures) from None


class _ChallengeRound:
    """The dns-01 challenges of one order: answered together, cleaned up together."""

    def __init__(
        self, client: AcmeClient, solver: DnsSolver, emit: Emitter, propagation_timeout: float
    ) -> None:
        self.client = client
        self.solver = solver
        self.emit = emit
        self.propagation_timeout = propagation_timeout
        self.presented: dict[tuple[str, str], PresentedChallenge] = {}

    async def run(self, pending: Sequence[tuple[Authorization, Challenge]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for authorization, challenge in pending:
                    group.create_task(self.solve(authorization, challenge))
        except BaseExceptionGroup as failures:
            raise _first_failure(failures) from None
        finally:
            if self.presented:
                await asyncio.shield(self.cleanup())

    async def solve(self, authorization: Authorization, challenge: Challenge) -> None:
        domain, emit = authorization.domain, self.emit
        assert challenge.token is not None
        value = dns01_txt_value(self.client.key.key_authorization(challenge.token))
        # Registered before the call: a present cut short by cancellation is cleaned up too.
        self.presented[domain, value] = PresentedChallenge(domain, value)
        emit(EventKind.PRESENTING, domain, value)
        handle = await self.solver.present(domain, value)
        self.presented[domain, value] = handle
        served = await self.solver.wait_propagated(handle, self.propagation_timeout)
        emit(EventKind.PROPAGATED, domain, served or "")
        await self.client.answer_challenge(challenge)
        emit(EventKind.CHALLENGE_ANSWERED, domain, challenge.url)
        final = await self.client.poll_authorization(authorization.url)
        if final.status is Status.VALID:
            emit(EventKind.AUTHORIZATION_VALID, domain)
            return
        emit(EventKind.AUTHORIZATION_INVALID, domain, str(final.error or final.status.value))
        raise AuthorizationFailedError(domain, final.url, final.status.value, final.error)

    async def cleanup(self) -> None:
        await asyncio.gather(*(self._cleanup(h) for h in list(self.presented.values())))

    async def _cleanup(self, handle: PresentedChallenge) -> None:
        try:
            await self.solver.cleanup(handle)
        except Exception as exc:
            log.warning("cleanup of %s failed: %s", handle.domain, exc)
            self.emit(EventKind.CLEANUP_FAILED, handle.domain, str(exc))
        else:
            self.emit(EventKind.CLEANED_UP, handle.domain, handle.value)


def _first_failure(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [failures]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        else:
            leaves.append(item)
    for other in leaves[1:]:
        log.warning("another authorization failed too: %s", other)
    return leaves[0]


async def _download(client: AcmeClient, url: str, preferred: str | None) -> ParsedChain:
    default = await client.download_certificate(url)
    chain = ParsedChain.from_pem(default.pem)
    if preferred is None or not default.alternates:
        return chain
    if chain.top_issuer.casefold() == preferred.casefold():
        return chain
    alternates = await asyncio.gather(*(client.download_certificate(u) for u in default.alternates))
    return choose_chain([chain, *(ParsedChain.from_pem(a.pem) for a in alternates)], preferred)


async def revoke(
    client: AcmeClient, certificate: CertificateInput, *, reason: int | None = None
) -> None:
    """Revoke a certificate of this account (signed with the account key); ``reason`` is
    an RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, 4 superseded,
    5 cessationOfOperation...)."""
    cert = load_certificate(certificate)
    await client.revoke_certificate(cert.public_bytes(serialization.Encoding.DER), reason)
    log.info("certificate with serial %x revoked (reason %s)", cert.serial_number, reason)
