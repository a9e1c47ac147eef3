"""Each trusted issuer's signing keys (its JWKS), from its discovery document or a file.

Keys are fetched on first use and again once ``jwks_max_age`` has passed; a token whose
``kid`` is not among them makes the broker fetch again at once, but at most once per
``jwks_refetch_interval`` per issuer, so a stream of made-up key ids cannot turn the
broker into a client that hammers the issuer. A failed fetch keeps the keys it had.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from broker.errors import IdentityProviderError
from broker.oidc.settings import OidcIssuer, OidcSettings

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 512 * 1024


class KeyFetchError(Exception):
    """The issuer's discovery document or JWKS could not be had; the message says why."""


def parse_jwks(data: object, where: str) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid``."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFetchError(f"{where} is not a JWKS document (an object with 'keys')")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct":  # a symmetric key is never trusted
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        keys[entry.get("kid")] = key
    if not keys:
        raise KeyFetchError(f"{where} holds no usable RSA or EC signing key")
    return keys


def load_jwks_file(issuer: OidcIssuer) -> dict[str | None, jwt.PyJWK]:
    """An issuer's keys from its ``jwks_file`` (blocking)."""
    assert issuer.jwks_file is not None
    try:
        data = json.loads(issuer.jwks_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyFetchError(f"cannot read {issuer.jwks_file} as JSON: {exc}") from None
    return parse_jwks(data, str(issuer.jwks_file))


class IssuerKeys:
    def __init__(
        self,
        issuer: OidcIssuer,
        settings: OidcSettings,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._settings = settings
        self._session = session
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._refetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many fetches were tried (tests and logs)."""

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key a token names (or the only key, for a token without ``kid``); None
        when the issuer has no such key, even after fetching its keys again."""
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age:
            await self._refresh()
        if not self._keys:
            raise IdentityProviderError(
                f"the keys of OIDC issuer {self.issuer.name!r} could not be fetched; "
                "try again later"
            )
        found = self._find(kid)
        if found is None and self._lock.locked():  # a fetch under way may bring it
            async with self._lock:
                found = self._find(kid)
        if found is None and self._may_refetch():
            log.info("oidc issuer %s: unknown key id %r, fetching its keys again",
                     self.issuer.name, kid)  # fmt: skip
            self._refetched_at = self._clock()
            await self._refresh()
            found = self._find(kid)
        return found

    @property
    def _max_age(self) -> float:
        return self._settings.jwks_max_age

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _may_refetch(self) -> bool:
        """An unknown key id fetches the keys again at most once per interval."""
        return (
            self._refetched_at is None
            or self._clock() - self._refetched_at >= self._settings.jwks_refetch_interval
        )

    async def _refresh(self) -> None:
        """Fetch the keys, one fetch at a time: callers that waited for another's fetch
        take its result. A failed fetch keeps the keys there were (and is tried again
        after the refetch interval, not at every request)."""
        attempt = self.fetches
        async with self._lock:
            if self.fetches != attempt:
                return
            self.fetches += 1
            try:
                keys = await self._fetch()
            except KeyFetchError as exc:
                log.warning("oidc issuer %s: keys not fetched: %s", self.issuer.name, exc)
                retry_in = self._settings.jwks_refetch_interval
                self._fetched_at = self._clock() - self._max_age + retry_in
                return
            if set(keys) != set(self._keys):
                log.info("oidc issuer %s: keys %s", self.issuer.name,
                         ", ".join(sorted(str(kid) for kid in keys)))  # fmt: skip
            self._keys = keys
            self._fetched_at = self._clock()

    async def fetch(self) -> dict[str | None, jwt.PyJWK]:
        """The issuer's keys, fetched now (KeyFetchError when they cannot be)."""
        return await self._fetch()

    async def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        if self.issuer.jwks_file is not None:
            return await asyncio.to_thread(load_jwks_file, self.issuer)
        discovery = await self._get_json(self.issuer.discovery_url)
        if not isinstance(discovery, dict) or discovery.get("issuer") != self.issuer.issuer:
            raise KeyFetchError(
                f"{self.issuer.discovery_url} does not name the issuer {self.issuer.issuer}"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise KeyFetchError(f"{self.issuer.discovery_url} gives no jwks_uri")
        return parse_jwks(await self._get_json(jwks_uri), jwks_uri)

    async def _get_json(self, url: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=self._settings.fetch_timeout)
        try:
            async with self._session().get(
                url, timeout=timeout, allow_redirects=False, headers={"Accept": "application/json"}
            ) as response:
                if response.status != 200:
                    raise KeyFetchError(f"{url} answered HTTP {response.status}")
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KeyFetchError(f"{url}: {exc or type(exc).__name__}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise KeyFetchError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise KeyFetchError(f"{url} did not answer JSON") from None
