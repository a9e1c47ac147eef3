"""The ACME protocol (RFC 8555) as one client object: directory, account, orders,
authorizations, challenges, finalization, certificates, revocation, renewal info."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from broker.acme.errors import AcmeError, PollTimeoutError, ProfileUnavailableError
from broker.acme.jws import AccountKey, ExternalAccountBinding, b64url, key_change_jws
from broker.acme.messages import (
    UNSETTLED,
    Account,
    Authorization,
    Challenge,
    Directory,
    Identifier,
    Order,
    RenewalInfo,
    Status,
)
from broker.acme.transport import PEM_CHAIN, RATE_LIMIT_MAX_WAIT, AcmeResponse, AcmeTransport
from broker.dnsname import normalize_name

log = logging.getLogger(__name__)

T = TypeVar("T")


def ssl_context(ca_bundle: str | Path | None = None) -> ssl_module.SSLContext:
    """Verify the CA's TLS against ``ca_bundle``, else the system store (SSL_CERT_FILE and
    SSL_CERT_DIR are honoured by OpenSSL's default paths)."""
    return ssl_module.create_default_context(cafile=None if ca_bundle is None else str(ca_bundle))


def identifier_for(name: str | Identifier) -> Identifier:
    """A DNS identifier, lower-case A-labels, no trailing dot; ``*.`` kept for wildcards."""
    if isinstance(name, Identifier):
        return name
    text = name.strip()
    wildcard = text.startswith("*.")
    base = normalize_name(text[2:] if wildcard else text, what="identifier")[:-1]
    return Identifier.dns(f"*.{base}" if wildcard else base)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How long and how often to poll an authorization or order.

    Waits grow from ``initial`` by ``factor`` up to ``maximum`` seconds; a Retry-After
    from the CA replaces the computed wait (at most ``max_retry_after``); nothing is
    polled after ``timeout`` seconds.
    """

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 5.0
    max_retry_after: float = 60.0
    timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class CertificateChain:
    """One certificate chain as downloaded (PEM), with the URLs of its alternates."""

    url: str
    pem: str
    alternates: tuple[str, ...] = ()


class AcmeClient:
    """One account key at one CA.

    Without ``session`` the client opens its own (closed by :meth:`close` or ``async
    with``), verifying TLS with ``ssl`` or :func:`ssl_context`. Every request has the
    ``timeout`` in seconds. ``account_url`` may be given when it is known; otherwise
    :meth:`new_account` or :meth:`find_account` sets it (the first call needing it
    looks it up). A request answered ``rateLimited`` with a Retry-After is retried after
    that wait while the waits of that request stay within ``rate_limit_wait`` seconds
    (at most 3 retries); otherwise the RateLimitedError is raised at once.
    """

    def __init__(
        self,
        directory_url: str,
        key: AccountKey,
        *,
        account_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 30.0,
        poll: PollPolicy | None = None,
        rate_limit_wait: float = RATE_LIMIT_MAX_WAIT,
    ) -> None:
        self.directory_url = directory_url
        self.key = key
        self.account_url = account_url
        self.poll_policy = poll or PollPolicy()
        self.transport = AcmeTransport(
            session, ssl=ssl, timeout=timeout, rate_limit_wait=rate_limit_wait
        )
        self._directory: Directory | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    @property
    def bad_nonce_retries(self) -> int:
        """How many times a badNonce answer was retried (each request at most once)."""
        return self.transport.bad_nonce_retries

    async def directory(self) -> Directory:
        if self._directory is None:
            response = await self.transport.get(self.directory_url)
            self._directory = Directory.from_json(response.json(), self.directory_url)
            self.transport.new_nonce_url = self._directory.new_nonce
        return self._directory

    async def _post(
        self, url: str, payload: Mapping[str, Any] | None, *, accept: str | None = None
    ) -> AcmeResponse:
        await self.directory()
        kid = await self._kid()
        return await self.transport.post(url, payload, self.key, kid=kid, accept=accept)

    async def _kid(self) -> str:
        if self.account_url is None:
            await self.find_account()
        assert self.account_url is not None
        return self.account_url

    async def new_account(
        self,
        *,
        contact: Sequence[str] = (),
        terms_of_service_agreed: bool = True,
        eab: ExternalAccountBinding | None = None,
    ) -> Account:
        """Create the account of this key, or find it when the CA already knows the key."""
        directory = await self.directory()
        payload: dict[str, Any] = {"termsOfServiceAgreed": terms_of_service_agreed}
        if contact:
            payload["contact"] = list(contact)
        if eab is not None:
            payload["externalAccountBinding"] = eab.sign(self.key.jwk, directory.new_account)
        return await self._account_request(directory.new_account, payload)

    async def find_account(self) -> Account:
        """The existing account of this key (``onlyReturnExisting``); raises
        AccountDoesNotExistError when the CA does not know the key."""
        directory = await self.directory()
        return await self._account_request(directory.new_account, {"onlyReturnExisting": True})

    async def _account_request(self, url: str, payload: Mapping[str, Any]) -> Account:
        response = await self.transport.post(url, payload, self.key, kid=None)
        account = Account.from_json(response.json(), response.required_location())
        if account.url != self.account_url:
            log.info("ACME account %s (%s)", account.url, account.status)
        self.account_url = account.url
        return account

    async def change_key(self, new_key: AccountKey) -> None:
        """Roll the account over to ``new_key`` (RFC 8555 7.3.5); the client then signs
        with it. The old key no longer names the account."""
        directory = await self.directory()
        if directory.key_change is None:
            raise AcmeError(f"{self.directory_url} offers no keyChange (RFC 8555 7.3.5)")
        account_url = await self._kid()
        inner = key_change_jws(new_key, self.key, url=directory.key_change, account=account_url)
        await self._post(directory.key_change, inner)
        self.key = new_key
        log.info("ACME account %s rolled over to a new key", account_url)

    async def deactivate_account(self) -> Account:
        """Deactivate the account (RFC 8555 7.3.6); the CA refuses its key from then on."""
        await self.directory()
        account_url = await self._kid()
        response = await self._post(account_url, {"status": "deactivated"})
        account = Account.from_json(response.json(), account_url)
        log.info("ACME account %s is %s", account_url, account.status)
        return account

    async def new_order(
        self,
        identifiers: Sequence[str | Identifier],
        *,
        replaces: str | None = None,
        profile: str | None = None,
    ) -> Order:
        """An order for the names; ``replaces`` (an RFC 9773 certificate id) is sent only
        when the CA offers renewalInfo. ``profile`` must be one the directory offers
        (else ProfileUnavailableError, before anything is sent)."""
        directory = await self.directory()
        if profile is not None and profile not in directory.profiles:
            raise ProfileUnavailableError(
                profile, tuple(directory.profiles), url=self.directory_url
            )
        payload: dict[str, Any] = {
            "identifiers": [identifier_for(name).to_json() for name in identifiers]
        }
        if replaces is not None and directory.renewal_info is not None:
            payload["replaces"] = replaces
        if profile is not None:
            payload["profile"] = profile
        response = await self._post(directory.new_order, payload)
        return Order.from_json(response.json(), response.required_location())

    async def get_order(self, url: str) -> Order:
        return Order.from_json((await self._post(url, None)).json(), url)

    async def get_authorization(self, url: str) -> Authorization:
        return Authorization.from_json((await self._post(url, None)).json(), url)

    async def answer_challenge(self, challenge: Challenge) -> Challenge:
        """Tell the CA the challenge is ready to be validated (POST ``{}``)."""
        return Challenge.from_json((await self._post(challenge.url, {})).json(), challenge.url)

    async def finalize(self, order: Order, csr_der: bytes) -> Order:
        """Send the CSR; the order comes back processing (``retry_after`` set if the CA
        said when to look again) or already valid."""
        response = await self._post(order.finalize, {"csr": b64url(csr_der)})
        return Order.from_json(response.json(), order.url, retry_after=response.retry_after)

    async def poll_authorization(self, url: str) -> Authorization:
        """The authorization once it is no longer pending."""
        return await self._poll(url, Authorization.from_json, lambda a: a.status)

    async def poll_order(self, url: str, *, first_wait: float | None = None) -> Order:
        """The order once it is no longer pending or processing; ``first_wait``: the
        Retry-After of the answer that said it was processing."""
        return await self._poll(url, Order.from_json, lambda o: o.status, first_wait)

    async def _poll(
        self,
        url: str,
        read: Callable[[Mapping[str, Any], str], T],
        status_of: Callable[[T], Status],
        first_wait: float | None = None,
    ) -> T:
        policy = self.poll_policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.timeout
        delay = policy.initial
        if first_wait:
            await asyncio.sleep(min(first_wait, policy.max_retry_after, policy.timeout))
        while True:
            response = await self._post(url, None)
            resource = read(response.json(), url)
            status = status_of(resource)
            remaining = deadline - loop.time()
            if status not in UNSETTLED:
                return resource
            if remaining <= 0:
                raise PollTimeoutError(url, policy.timeout, status.value)
            wait = delay
            if response.retry_after is not None:
                wait = min(response.retry_after, policy.max_retry_after)
            await asyncio.sleep(min(wait, remaining))
            delay = min(delay * policy.factor, policy.maximum)

    async def download_certificate(self, url: str) -> CertificateChain:
        response = await self._post(url, None, accept=PEM_CHAIN)
        if "-----BEGIN CERTIFICATE-----" not in response.text():
            raise AcmeError(f"{url}: the CA sent no PEM certificate chain")
        return CertificateChain(url, response.text(), tuple(response.linked("alternate")))

    async def certificate_chains(self, url: str) -> list[CertificateChain]:
        """The default chain first, then every alternate the CA links to."""
        default = await self.download_certificate(url)
        alternates = await asyncio.gather(
            *(self.download_certificate(alternate) for alternate in default.alternates)
        )
        return [default, *alternates]

    async def revoke_certificate(self, certificate_der: bytes, reason: int | None = None) -> None:
        """Revoke with the account key (RFC 8555 7.6); ``reason`` is an RFC 5280 code."""
        directory = await self.directory()
        payload: dict[str, Any] = {"certificate": b64url(certificate_der)}
        if reason is not None:
            payload["reason"] = reason
        await self._post(directory.revoke_cert, payload)

    async def renewal_info(self, certificate_id: str) -> RenewalInfo:
        """RFC 9773: GET the suggested renewal window of a certificate (by its ARI id)."""
        directory = await self.directory()
        if directory.renewal_info is None:
            raise AcmeError(f"{self.directory_url} offers no renewalInfo (RFC 9773)")
        url = f"{directory.renewal_info.rstrip('/')}/{certificate_id}"
        response = await self.transport.get(url)
        return RenewalInfo.from_json(response.json(), url, response.retry_after)
