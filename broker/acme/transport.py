"""HTTP to the CA: signed POSTs with a nonce pool, badNonce retried exactly once,
rateLimited retried after its Retry-After within a bound, problem documents raised as
typed errors, and the Link and Retry-After headers read."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import aiohttp

from broker.acme.errors import (
    AcmeNetworkError,
    AcmeProblem,
    AcmeProtocolError,
    AcmeTimeoutError,
    BadNonceError,
    RateLimitedError,
)
from broker.acme.jws import AccountKey, sign_jws

log = logging.getLogger(__name__)

USER_AGENT = "dns01-broker-acme/0.1"
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_MAX_WAIT = 60.0
"""Seconds of Retry-After waits one request may spend before its rateLimited is raised."""
JOSE_JSON = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"

_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*(?:[^;,"]|"[^"]*")*)*)')
_PARAM = re.compile(r';\s*([A-Za-z*-]+)\s*=\s*(?:"([^"]*)"|([^\s;,]+))')


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    rel: str


def parse_links(values: Iterable[str], base_url: str) -> tuple[Link, ...]:
    """RFC 8288 Link header values (one or several per header), targets made absolute."""
    links: list[Link] = []
    for value in values:
        for match in _LINK.finditer(value):
            target = urljoin(base_url, match.group(1).strip())
            for param in _PARAM.finditer(match.group(2)):
                if param.group(1).lower() != "rel":
                    continue
                rels = param.group(2) if param.group(2) is not None else param.group(3)
                links.extend(Link(target, rel.lower()) for rel in rels.split())
    return tuple(links)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class AcmeResponse:
    url: str
    status: int
    content_type: str
    body: bytes
    location: str | None
    nonce: str | None
    links: tuple[Link, ...]
    retry_after: float | None

    def json(self) -> Mapping[str, Any]:
        try:
            data = json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise AcmeProtocolError(
                self.url, "the answer is not JSON", status=self.status
            ) from None
        if not isinstance(data, Mapping):
            raise AcmeProtocolError(self.url, "the answer is not a JSON object", status=self.status)
        return data

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def linked(self, rel: str) -> list[str]:
        return [link.url for link in self.links if link.rel == rel]

    def required_location(self) -> str:
        if not self.location:
            raise AcmeProtocolError(
                self.url, "the answer has no Location header", status=self.status
            )
        return self.location

    @property
    def problem(self) -> AcmeProblem | None:
        if self.status < 400:
            return None
        if self.content_type not in ("application/problem+json", "application/json"):
            return None
        try:
            document = self.json()
        except AcmeProtocolError:
            return None
        return AcmeProblem.from_json(
            document, status=self.status, retry_after=self.retry_after, url=self.url
        )


class AcmeTransport:
    """Sends the HTTP requests of one client; owns the nonce pool.

    Without ``session`` it opens its own on first use (TLS verified with ``ssl``, else
    the system store) and closes it in :meth:`close`. ``new_nonce_url`` must be set
    (from the directory) before the first POST. A POST answered ``rateLimited`` with a
    Retry-After is sent again after that wait, at most :data:`RATE_LIMIT_RETRIES`
    times and ``rate_limit_wait`` seconds of waiting in all.

    Every signed POST may be sent again: a rateLimited answer is the CA's refusal of
    the request, so nothing was created, finalized, answered or changed (newAccount,
    newOrder, finalize, challenge answers, keyChange, deactivation, revocation and
    POST-as-GET alike). The retry is a new JWS with a fresh nonce (the one the 429
    answer carried), never the old body. Unsigned GETs (directory, renewalInfo) are
    not retried: a renewalInfo Retry-After is a schedule for the caller.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float,
        rate_limit_wait: float = RATE_LIMIT_MAX_WAIT,
    ) -> None:
        self._session = session
        self._own_session = session is None
        self._ssl = ssl
        self.timeout = timeout
        self.rate_limit_wait = rate_limit_wait
        self.new_nonce_url: str | None = None
        self.bad_nonce_retries = 0
        self._nonces: list[str] = []

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = self._ssl or ssl_module.create_default_context()
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str, *, accept: str | None = None) -> AcmeResponse:
        """An unauthenticated GET (directory, renewal information); problems raise."""
        return _checked(await self._send("GET", url, accept=accept))

    async def post(
        self,
        url: str,
        payload: Mapping[str, Any] | None,
        key: AccountKey,
        *,
        kid: str | None,
        accept: str | None = None,
    ) -> AcmeResponse:
        """A signed POST (``payload=None``: POST-as-GET); a badNonce is retried once, a
        rateLimited answer after its Retry-After while the bound allows (else raised)."""
        waited = 0.0
        for retry in range(RATE_LIMIT_RETRIES + 1):
            response = await self._post_with_nonce(url, payload, key, kid=kid, accept=accept)
            problem = response.problem
            if not isinstance(problem, RateLimitedError) or retry == RATE_LIMIT_RETRIES:
                break
            wait = problem.retry_after
            if wait is None or wait > self.rate_limit_wait - waited:
                break
            log.warning(
                "rate limited by %s; retrying in %g s (retry %d of %d): %s",
                url, wait, retry + 1, RATE_LIMIT_RETRIES, problem.detail,
            )  # fmt: skip
            await asyncio.sleep(wait)
            waited += wait
        return _checked(response)

    async def _post_with_nonce(
        self,
        url: str,
        payload: Mapping[str, Any] | None,
        key: AccountKey,
        *,
        kid: str | None,
        accept: str | None,
    ) -> AcmeResponse:
        nonce = await self._take_nonce()
        response = await self._post_once(
            url, payload=payload, key=key, kid=kid, nonce=nonce, accept=accept
        )
        if isinstance(response.problem, BadNonceError):
            self.bad_nonce_retries += 1
            log.debug("badNonce from %s; retrying once with the nonce it sent", url)
            fresh = response.nonce or await self._fetch_nonce()
            response = await self._post_once(
                url, payload=payload, key=key, kid=kid, nonce=fresh, accept=accept
            )
        if response.nonce:
            self._nonces.append(response.nonce)
        return response

    async def _post_once(
        self,
        url: str,
        *,
        payload: Mapping[str, Any] | None,
        key: AccountKey,
        kid: str | None,
        nonce: str,
        accept: str | None,
    ) -> AcmeResponse:
        body = sign_jws(
            key, None if payload is None else dict(payload), url=url, nonce=nonce, kid=kid
        )
        return await self._send("POST", url, data=json.dumps(body).encode(), accept=accept)

    async def _take_nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        return await self._fetch_nonce()

    async def _fetch_nonce(self) -> str:
        if self.new_nonce_url is None:
            raise AcmeProtocolError("newNonce", "no directory read yet; the nonce URL is unknown")
        response = _checked(await self._send("HEAD", self.new_nonce_url))
        if not response.nonce:
            raise AcmeProtocolError(response.url, "newNonce answered without Replay-Nonce")
        return response.nonce

    async def _send(
        self, method: str, url: str, *, data: bytes | None = None, accept: str | None = None
    ) -> AcmeResponse:
        headers = {"User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = JOSE_JSON
        if accept is not None:
            headers["Accept"] = accept
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as raw:
                body = await raw.read()
                return _response(url, raw, body)
        except TimeoutError:
            raise AcmeTimeoutError(url, self.timeout) from None
        except aiohttp.ClientError as exc:
            raise AcmeNetworkError(url, str(exc) or type(exc).__name__) from exc


def _response(url: str, raw: aiohttp.ClientResponse, body: bytes) -> AcmeResponse:
    location = raw.headers.get("Location")
    return AcmeResponse(
        url=url,
        status=raw.status,
        content_type=raw.content_type,
        body=body,
        location=urljoin(url, location) if location else None,
        nonce=raw.headers.get("Replay-Nonce"),
        links=parse_links(raw.headers.getall("Link", []), url),
        retry_after=parse_retry_after(raw.headers.get("Retry-After")),
    )


def _checked(response: AcmeResponse) -> AcmeResponse:
    problem = response.problem
    if problem is not None:
        raise problem
    if response.status >= 400:
        raise AcmeProtocolError(
            response.url,
            f"HTTP {response.status} without a problem document: {response.text()[:200]!r}",
            status=response.status,
        )
    return response
