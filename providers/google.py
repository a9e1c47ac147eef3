"""Google Cloud DNS (google-cloud-dns client library, run off the event loop).

Credentials are a service account's key JSON (or an authorized_user JSON) given as an
``env:``/``file:`` reference, or else the application default credentials. Managed
zones are found by dnsName (listed at open() when none are configured); a public zone
wins over a private one of the same name. A batch of edits is one change replacing
each touched TXT RRset atomically: the deletion names the RRset exactly as read, so a
concurrent writer makes the API answer 409/412 and the read-modify-write runs again.

Calls go through the library's connection (auth, endpoint, errors) with an explicit
timeout each, since its object helpers take none and cannot filter rrsets by name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, TypeVar

import google.auth
import google.auth.exceptions
import google.oauth2.credentials
from google.api_core import exceptions as api
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import dns  # type: ignore[import-untyped]
from google.oauth2 import service_account
from pydantic import Field, SecretStr, field_validator

from broker.dnsname import normalize_name
from broker.values import Duration, Secret
from providers.base import (
    Capabilities,
    Change,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
    ZoneNotFoundError,
)
from providers.batching import BatchedProvider, TxtEdit, by_name, last_ttl, merge_values
from providers.settings import CloudApiSettings
from providers.txt import parse_txt, quote_txt

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/ndev.clouddns.readwrite",)
R = TypeVar("R")
REDISCOVER_AFTER = 30.0
"""Seconds before a name in no known managed zone may list the zones again."""
CREDENTIAL_TYPES = ("service_account", "authorized_user")
RATE_LIMITED = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


class GoogleSettings(CloudApiSettings):
    type: Literal["google"]
    project: str | None = None
    """Project id; default: the one named by the credentials."""
    credentials: Secret | None = None
    """A service account's key JSON (or an authorized_user JSON); default: application
    default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server)."""
    api_endpoint: str | None = None
    """Cloud DNS endpoint (tests: a local fake)."""
    poll_interval: Duration = Field(2.0, le=300)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            info = json.loads(value.get_secret_value())
        except ValueError:
            raise ValueError("credentials must be the JSON text of a credentials file") from None
        if not isinstance(info, dict) or info.get("type") not in CREDENTIAL_TYPES:
            raise ValueError(
                'credentials JSON must have "type": "service_account" or "authorized_user" '
                "(other kinds through application default credentials)"
            )
        return value


class ChangeConflictError(ProviderUnavailableError):
    """The RRset changed between reading it and submitting the change."""


class GoogleProvider(BatchedProvider):
    capabilities: ClassVar[Capabilities] = Capabilities(
        applies_synchronously=False, merges_concurrent_changes=True
    )

    def __init__(self, name: str, settings: GoogleSettings) -> None:
        super().__init__(name)
        self.settings = settings
        self._client: Any = None
        self._project = settings.project or ""
        self._managed: dict[str, str] = {}
        self._discovery = asyncio.Lock()
        self._discovered_at: dict[str, float] = {}
        """When a name missing from ``_managed`` last made the zones be listed again."""

    async def open(self) -> None:
        credentials, project = await self._guard("credentials", self._load_credentials)
        self._project = self.settings.project or project or ""
        if not self._project:
            raise ProviderAuthError(
                f"google provider {self.name!r}: set project (the credentials name none)"
            )
        session = AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, refresh_timeout=self.settings.timeout
        )
        options = (
            {"api_endpoint": self.settings.api_endpoint} if self.settings.api_endpoint else None
        )
        self._client = dns.Client(
            project=self._project, credentials=credentials, _http=session, client_options=options
        )
        if not self.settings.zones:
            await self._discover()
            log.info("google provider %s serves %d managed zones", self.name, len(self._managed))

    def _load_credentials(self) -> tuple[Credentials, str | None]:
        if self.settings.credentials is None:
            return google.auth.default(scopes=SCOPES)
        info = json.loads(self.settings.credentials.get_secret_value())
        try:
            if info["type"] == "service_account":
                account = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=SCOPES
                )
                return account, info.get("project_id")
            user = google.oauth2.credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, SCOPES
            )
            return user, info.get("quota_project_id")
        except (ValueError, KeyError) as exc:
            raise ProviderAuthError(
                f"google provider {self.name!r}: the {info['type']} credentials JSON is not "
                f"usable: {exc}"
            ) from None

    async def close(self) -> None:
        await super().close()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def check(self) -> None:
        await self._request("GET", "/managedZones", query={"maxResults": 1})
        for zone in self.settings.zones:
            await self._managed_zone(zone)

    def zones(self) -> tuple[str, ...]:
        return tuple(self.settings.zones) or tuple(sorted(self._managed))

    async def list_txt(self, zone: str, name: str) -> list[str]:
        with self._forget_if_missing(zone):
            current = await self._read(await self._managed_zone(zone), name)
        return [parse_txt(text) for text in current["rrdatas"]] if current else []

    async def _poll_change(self, change_id: str) -> None:
        managed, _, number = change_id.partition("/")
        deadline = time.monotonic() + self.settings.apply_timeout
        while True:
            change = await self._request("GET", f"/managedZones/{managed}/changes/{number}")
            if change.get("status") == "done":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderUnavailableError(
                    f"google change {change_id} is still {change.get('status')} after "
                    f"{self.settings.apply_timeout:g} s"
                )
            await asyncio.sleep(min(self.settings.poll_interval, remaining))

    async def _apply(self, zone: str, edits: Sequence[TxtEdit]) -> Change | None:
        with self._forget_if_missing(zone):
            return await self._apply_to(await self._managed_zone(zone), edits)

    async def _apply_to(self, managed: str, edits: Sequence[TxtEdit]) -> Change | None:
        delay = self.settings.backoff
        for attempt in range(1, self.settings.max_attempts + 1):
            additions: list[dict[str, Any]] = []
            deletions: list[dict[str, Any]] = []
            for name, group in by_name(edits).items():
                current = await self._read(managed, name)
                _replace(name, current, group, additions, deletions)
            if not additions and not deletions:
                return None
            body = {"kind": "dns#change", "additions": additions, "deletions": deletions}
            try:
                change = await self._request("POST", f"/managedZones/{managed}/changes", data=body)
            except ChangeConflictError as exc:
                if attempt == self.settings.max_attempts:
                    raise
                log.info("google provider %s: %s; reading again", self.name, exc)
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter
                delay = min(delay * 2, 20.0)
                continue
            return Change(self.name, f"{managed}/{change['id']}")
        raise AssertionError("unreachable")

    async def _read(self, managed: str, name: str) -> dict[str, Any] | None:
        page = await self._request(
            "GET", f"/managedZones/{managed}/rrsets", query={"name": name, "type": "TXT"}
        )
        for rrset in page.get("rrsets", []):
            if rrset.get("name", "").lower() == name and rrset.get("type") == "TXT":
                return dict(rrset)
        return None

    @contextmanager
    def _forget_if_missing(self, zone: str) -> Iterator[None]:
        """A managed zone deleted (or recreated) since discovery is looked up again."""
        try:
            yield
        except ZoneNotFoundError:
            self._managed.pop(zone, None)
            raise

    async def _managed_zone(self, zone: str) -> str:
        if self.settings.zones and zone not in self.settings.zones:
            raise ZoneNotFoundError(f"google provider {self.name!r} does not serve zone {zone}")
        last = self._discovered_at.get(zone)
        if zone not in self._managed and (
            last is None or time.monotonic() - last >= REDISCOVER_AFTER
        ):
            await self._discover(zone if self.settings.zones else None)
            self._discovered_at[zone] = time.monotonic()
        if zone not in self._managed:
            raise ZoneNotFoundError(
                f"google provider {self.name!r}: project {self._project} has no managed zone "
                f"with dnsName {zone}"
            )
        return self._managed[zone]

    async def _discover(self, dns_name: str | None = None) -> None:
        async with self._discovery:
            found: dict[str, tuple[str, bool]] = {}
            query: dict[str, Any] = {"dnsName": dns_name} if dns_name else {}
            for _ in range(10_000):
                page = await self._request("GET", "/managedZones", query=query)
                for zone in page.get("managedZones", []):
                    private = zone.get("visibility") == "private"
                    if private and not self.settings.private_zones:
                        continue
                    name = _zone_name(zone.get("dnsName", ""))
                    if name is not None and (name not in found or found[name][1]):
                        found[name] = (zone["name"], private)
                if not page.get("nextPageToken"):
                    break
                query = {**query, "pageToken": page["nextPageToken"]}
            managed = {name: zone_id for name, (zone_id, _) in found.items()}
            self._managed = {**self._managed, **managed} if dns_name else managed

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self._client is None:
            raise ProviderUnavailableError(f"google provider {self.name!r} is not open")
        connection = self._client._connection
        what = f"{method} {path}"
        delay = self.settings.backoff
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                result: dict[str, Any] = await self._guard(
                    what,
                    lambda: connection.api_request(
                        method=method,
                        path=f"/projects/{self._project}{path}",
                        query_params=query,
                        data=data,
                        timeout=self.settings.timeout,
                    ),
                )
            except ProviderThrottledError as exc:
                if attempt == self.settings.max_attempts:
                    raise
                log.info(
                    "google provider %s: %s; retry %d in %.1f s", self.name, exc, attempt, delay
                )
                await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
                delay = min(delay * 2, 20.0)
                continue
            return result
        raise AssertionError("unreachable")

    async def _guard(self, what: str, call: Callable[[], R]) -> R:
        """``call()`` in a thread; whatever it raises leaves as a ProviderError."""
        try:
            result = await asyncio.to_thread(call)
        except api.GoogleAPICallError as exc:
            raise self._api_error(what, exc) from exc
        except google.auth.exceptions.TransportError as exc:
            raise ProviderUnavailableError(
                self._text(what, f"token refresh failed: {exc}")
            ) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise ProviderAuthError(self._text(what, f"credentials refused: {exc}")) from exc
        except (OSError, ValueError) as exc:
            raise ProviderUnavailableError(
                self._text(what, f"{type(exc).__name__}: {exc}")
            ) from exc
        return result

    def _text(self, what: str, detail: str) -> str:
        return f"google provider {self.name!r}: {what} failed: {detail}"

    def _api_error(self, what: str, exc: api.GoogleAPICallError) -> ProviderError:
        reasons = {error.get("reason") for error in exc.errors if isinstance(error, dict)}
        text = self._text(what, f"{exc.code} {exc.message}")
        if isinstance(exc, api.TooManyRequests) or reasons & RATE_LIMITED:
            return ProviderThrottledError(text)
        if isinstance(exc, api.Unauthorized | api.Forbidden) and "quotaExceeded" not in reasons:
            return ProviderAuthError(text)
        if isinstance(exc, api.Conflict | api.PreconditionFailed):
            return ChangeConflictError(text)
        if isinstance(exc, api.NotFound):
            if "entity.change.deletions" in exc.message:
                return ChangeConflictError(text)
            return ZoneNotFoundError(text)
        if isinstance(exc, api.ServerError):
            return ProviderUnavailableError(text)
        return ProviderRejectedError(text)


def _replace(
    name: str,
    current: dict[str, Any] | None,
    edits: Sequence[TxtEdit],
    additions: list[dict[str, Any]],
    deletions: list[dict[str, Any]],
) -> None:
    """Append the deletion of ``current`` and the addition of the merged RRset, unless
    nothing changes."""
    raw: list[str] = list(current["rrdatas"]) if current else []
    ttl = int(current["ttl"]) if current else None
    existing = {parse_txt(text): text for text in raw}
    values = merge_values(list(existing), edits)
    new_ttl = last_ttl(edits) or ttl or 300
    if values == list(existing) and (new_ttl == ttl or not values):
        return
    if current is not None:
        deletions.append({"name": name, "type": "TXT", "ttl": ttl, "rrdatas": raw})
    if values:
        rrdatas = [existing.get(value) or quote_txt(value) for value in values]
        additions.append({"name": name, "type": "TXT", "ttl": new_ttl, "rrdatas": rrdatas})


def _zone_name(text: str) -> str | None:
    try:
        return normalize_name(text, what="managed zone dnsName")
    except ValueError:
        log.warning("skipping managed zone %r: not a plain domain name", text)
        return None
