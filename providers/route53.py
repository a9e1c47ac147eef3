"""Amazon Route53 (boto3, run off the event loop).

Credentials come from the settings (``env:``/``file:`` references), a named profile or
the standard AWS chain; a role may be assumed on top and is re-assumed before its
credentials expire. Hosted zones are listed at open() (or looked up on first use when
configured), public and private, the most specific one winning and a public zone
preferred over a private zone of the same name. Each batch of edits is one
ChangeResourceRecordSets: UPSERT of the merged value set, DELETE of the last value.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from pydantic import Field, SecretStr, model_validator

from broker.dnsname import normalize_name
from broker.values import Secret
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

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import (
        ChangeBatchTypeDef,
        ChangeResourceRecordSetsResponseTypeDef,
        ChangeTypeDef,
        ListHostedZonesResponseTypeDef,
        ResourceRecordTypeDef,
    )

log = logging.getLogger(__name__)
T = TypeVar("T")

THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded",
     "TooManyRequestsException", "RequestThrottled"}
)  # fmt: skip
AUTH_FAILURES = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
     "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId",
     "MissingAuthenticationToken", "IncompleteSignature", "RequestExpired", "AuthFailure"}
)  # fmt: skip
ZONE_MISSING = frozenset({"NoSuchHostedZone", "HostedZoneNotFound"})
ROLE_REFRESH_MARGIN = timedelta(minutes=5)
REDISCOVER_AFTER = 30.0
"""Seconds before a name in no known hosted zone may list the hosted zones again."""


class Route53Settings(CloudApiSettings):
    """``zones``: hosted zones to serve; empty: every hosted zone of the account, at open()."""

    type: Literal["route53"]
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    region: str = "us-east-1"
    role_arn: str | None = None
    role_session_name: str = Field("dns01-broker", min_length=2, max_length=64)
    external_id: Secret | None = None
    endpoint_url: str | None = None
    """Route53 and STS endpoint (tests: a moto server)."""
    """``private_zones``: also serve private hosted zones (a public zone of the same name
    wins); ``apply_timeout``: how long wait_applied waits for INSYNC."""

    @model_validator(mode="after")
    def _credentials(self) -> Route53Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give either profile or access_key_id/secret_access_key")
        return self


class Route53Provider(BatchedProvider):
    capabilities: ClassVar[Capabilities] = Capabilities(
        applies_synchronously=False, merges_concurrent_changes=True, rewrites_rrset=True
    )

    def __init__(self, name: str, settings: Route53Settings) -> None:
        super().__init__(name)
        self.settings = settings
        self._zone_ids: dict[str, str] = {}
        self._discovery = asyncio.Lock()
        self._discovered_at: float | None = None
        self._client: Route53Client | None = None
        self._client_expires: datetime | None = None
        self._client_lock = threading.Lock()

    async def open(self) -> None:
        if not self.settings.zones:
            await self._discover()
            log.info("route53 provider %s serves %d hosted zones", self.name, len(self._zone_ids))

    async def close(self) -> None:
        await super().close()
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def check(self) -> None:
        await self._call("ListHostedZones", lambda c: c.list_hosted_zones(MaxItems="1"))
        for zone in self.settings.zones:
            await self._zone_id(zone)

    def zones(self) -> tuple[str, ...]:
        return tuple(self.settings.zones) or tuple(sorted(self._zone_ids))

    async def list_txt(self, zone: str, name: str) -> list[str]:
        with self._forget_if_missing(zone):
            current = await self._read(await self._zone_id(zone), name)
        return [parse_txt(raw, base=8) for raw in current[1]] if current else []

    async def _poll_change(self, change_id: str) -> None:
        deadline = time.monotonic() + self.settings.apply_timeout
        while True:
            info = await self._call("GetChange", lambda c: c.get_change(Id=change_id))
            if info["ChangeInfo"]["Status"] == "INSYNC":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderUnavailableError(
                    f"route53 change {change_id} is still PENDING after "
                    f"{self.settings.apply_timeout:g} s"
                )
            await asyncio.sleep(min(self.settings.poll_interval, remaining))

    async def _apply(self, zone: str, edits: Sequence[TxtEdit]) -> Change | None:
        with self._forget_if_missing(zone):
            return await self._apply_to(await self._zone_id(zone), edits)

    async def _apply_to(self, zone_id: str, edits: Sequence[TxtEdit]) -> Change | None:
        for attempt in range(2):
            changes: list[ChangeTypeDef] = []
            for name, group in by_name(edits).items():
                change = _rrset_change(name, await self._read(zone_id, name), group)
                if change is not None:
                    changes.append(change)
            if not changes:
                return None
            batch: ChangeBatchTypeDef = {"Comment": "dns01-broker", "Changes": changes}
            try:
                result = await self._submit(zone_id, batch)
            except ProviderRejectedError:
                stale_delete = any(change["Action"] == "DELETE" for change in changes)
                if attempt == 0 and stale_delete:
                    continue  # the RRset changed since it was read: read it again
                raise
            return Change(self.name, result["ChangeInfo"]["Id"])
        raise AssertionError("unreachable")

    async def _submit(
        self, zone_id: str, batch: ChangeBatchTypeDef
    ) -> ChangeResourceRecordSetsResponseTypeDef:
        return await self._call(
            "ChangeResourceRecordSets",
            lambda c: c.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch=batch),
        )

    async def _read(self, zone_id: str, name: str) -> tuple[int, list[str]] | None:
        page = await self._call(
            "ListResourceRecordSets",
            lambda c: c.list_resource_record_sets(
                HostedZoneId=zone_id, StartRecordName=name, StartRecordType="TXT", MaxItems="1"
            ),
        )
        for rrset in page["ResourceRecordSets"]:
            same_name = rrset["Name"].lower().rstrip(".") == name.rstrip(".")
            if same_name and rrset["Type"] == "TXT" and "SetIdentifier" not in rrset:
                return rrset.get("TTL", 300), [r["Value"] for r in rrset.get("ResourceRecords", [])]
        return None

    @contextmanager
    def _forget_if_missing(self, zone: str) -> Iterator[None]:
        """A hosted zone deleted (or recreated) since discovery is looked up again."""
        try:
            yield
        except ZoneNotFoundError:
            self._zone_ids.pop(zone, None)
            raise

    async def _zone_id(self, zone: str) -> str:
        if self.settings.zones and zone not in self.settings.zones:
            raise ZoneNotFoundError(f"route53 provider {self.name!r} does not serve zone {zone}")
        if zone not in self._zone_ids and self._may_rediscover():
            await self._discover()
        if zone not in self._zone_ids:
            kinds = "public or private" if self.settings.private_zones else "public"
            raise ZoneNotFoundError(
                f"route53 provider {self.name!r}: the account has no {kinds} hosted zone "
                f"named {zone}"
            )
        return self._zone_ids[zone]

    def _may_rediscover(self) -> bool:
        last = self._discovered_at
        return last is None or time.monotonic() - last >= REDISCOVER_AFTER

    async def _discover(self) -> None:
        async with self._discovery:
            found: dict[str, tuple[str, bool]] = {}
            marker = ""
            for _ in range(10_000):
                page = await self._call("ListHostedZones", _list_hosted_zones(marker))
                for zone in page["HostedZones"]:
                    private = zone.get("Config", {}).get("PrivateZone", False)
                    if private and not self.settings.private_zones:
                        continue
                    name = _zone_name(zone["Name"])
                    if name is not None and (name not in found or found[name][1]):
                        found[name] = (zone["Id"].removeprefix("/hostedzone/"), private)
                if not page.get("IsTruncated"):
                    break
                marker = page["NextMarker"]
            self._zone_ids = {name: zone_id for name, (zone_id, _) in found.items()}
            self._discovered_at = time.monotonic()

    async def _call(self, operation: str, call: Callable[[Route53Client], T]) -> T:
        delay = self.settings.backoff
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return await asyncio.to_thread(self._invoke, call)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in THROTTLING and attempt < self.settings.max_attempts:
                    log.info(
                        "route53 provider %s: %s answered %s, retry %d in %.1f s",
                        self.name, operation, code, attempt, delay,
                    )  # fmt: skip
                    await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
                    delay = min(delay * 2, 20.0)
                    continue
                raise self._client_error(operation, exc) from exc
            except BotoCoreError as exc:
                raise self._botocore_error(operation, exc) from exc
        raise AssertionError("unreachable")

    def _invoke(self, call: Callable[[Route53Client], T]) -> T:
        return call(self._route53())

    def _route53(self) -> Route53Client:
        with self._client_lock:
            expiring = self._client_expires is not None and (
                datetime.now(UTC) + ROLE_REFRESH_MARGIN >= self._client_expires
            )
            if self._client is None or expiring:
                self._client, self._client_expires = self._make_client()
            return self._client

    def _make_client(self) -> tuple[Route53Client, datetime | None]:
        s = self.settings
        config = botocore.config.Config(
            connect_timeout=s.timeout,
            read_timeout=s.timeout,
            retries={"total_max_attempts": 1},
            user_agent_extra="dns01-broker",
        )
        session = boto3.session.Session(
            aws_access_key_id=_reveal(s.access_key_id),
            aws_secret_access_key=_reveal(s.secret_access_key),
            aws_session_token=_reveal(s.session_token),
            profile_name=s.profile,
            region_name=s.region,
        )
        expires = None
        if s.role_arn is not None:
            sts = session.client("sts", endpoint_url=s.endpoint_url, config=config)
            role, session_name = s.role_arn, s.role_session_name
            if s.external_id is not None:
                external_id = s.external_id.get_secret_value()
                assumed = sts.assume_role(
                    RoleArn=role, RoleSessionName=session_name, ExternalId=external_id
                )
            else:
                assumed = sts.assume_role(RoleArn=role, RoleSessionName=session_name)
            credentials = assumed["Credentials"]
            log.info("route53 provider %s assumed role %s", self.name, s.role_arn)
            session = boto3.session.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                region_name=s.region,
            )
            expires = credentials["Expiration"]
        return session.client("route53", endpoint_url=s.endpoint_url, config=config), expires

    def _client_error(self, operation: str, exc: ClientError) -> ProviderError:
        error: Any = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"route53 provider {self.name!r}: {operation} failed: {code or status}: {message}"
        if code in AUTH_FAILURES or status in (401, 403):
            return ProviderAuthError(text)
        if code in THROTTLING:
            return ProviderThrottledError(text + f" (after {self.settings.max_attempts} tries)")
        if code in ZONE_MISSING:
            return ZoneNotFoundError(text)
        if status >= 500 or code in ("ServiceUnavailable", "InternalFailure", "InternalError"):
            return ProviderUnavailableError(text)
        return ProviderRejectedError(text)

    def _botocore_error(self, operation: str, exc: BotoCoreError) -> ProviderError:
        text = f"route53 provider {self.name!r}: {operation} failed: {exc}"
        credentials = (
            NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, ProfileNotFound
        )  # fmt: skip
        if isinstance(exc, credentials):
            return ProviderAuthError(
                text + " (set access_key_id/secret_access_key, profile, or the AWS environment)"
            )
        if isinstance(exc, ParamValidationError):
            return ProviderRejectedError(text)
        return ProviderUnavailableError(text)


def _rrset_change(
    name: str, current: tuple[int, list[str]] | None, edits: Sequence[TxtEdit]
) -> ChangeTypeDef | None:
    """UPSERT of the merged values, DELETE of the last one, or None when nothing changes."""
    ttl, raw = current if current is not None else (None, [])
    existing = {parse_txt(text, base=8): text for text in raw}
    values = merge_values(list(existing), edits)
    new_ttl = last_ttl(edits) or ttl or 300
    if values == list(existing) and (new_ttl == ttl or not values):
        return None
    if not values:
        assert ttl is not None
        return {
            "Action": "DELETE",
            "ResourceRecordSet": {
                "Name": name, "Type": "TXT", "TTL": ttl,
                "ResourceRecords": [{"Value": text} for text in raw],
            },
        }  # fmt: skip
    records: list[ResourceRecordTypeDef] = [
        {"Value": existing.get(value) or quote_txt(value, base=8)} for value in values
    ]
    return {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": name,
            "Type": "TXT",
            "TTL": new_ttl,
            "ResourceRecords": records,
        },
    }


def _list_hosted_zones(marker: str) -> Callable[[Route53Client], ListHostedZonesResponseTypeDef]:
    def call(client: Route53Client) -> ListHostedZonesResponseTypeDef:
        return client.list_hosted_zones(Marker=marker) if marker else client.list_hosted_zones()

    return call


def _zone_name(text: str) -> str | None:
    try:
        return normalize_name(text, what="hosted zone name")
    except ValueError:
        log.warning("skipping hosted zone %r: not a plain domain name", text)
        return None


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
