"""RFC 8555 resources as frozen dataclasses, read from the CA's JSON.

Readers keep what the client uses and tolerate members they do not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin

from broker.acme.errors import AcmeProblem, AcmeProtocolError

JsonObject = Mapping[str, Any]


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"


UNSETTLED = frozenset({Status.PENDING, Status.PROCESSING})


def _str(data: JsonObject, key: str, url: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise AcmeProtocolError(url, f"the CA's JSON lacks the string member {key!r}")
    return value


def _optional_str(data: JsonObject, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _link(data: JsonObject, key: str, base: str) -> str:
    """A URL member, made absolute against the resource's own URL."""
    return urljoin(base, _str(data, key, base))


def _optional_link(data: JsonObject, key: str, base: str) -> str | None:
    value = _optional_str(data, key)
    return None if value is None else urljoin(base, value)


def _status(data: JsonObject, url: str) -> Status:
    text = _str(data, "status", url)
    try:
        return Status(text)
    except ValueError:
        raise AcmeProtocolError(url, f"unknown status {text!r}") from None


def _problem(data: JsonObject, url: str) -> AcmeProblem | None:
    error = data.get("error")
    return AcmeProblem.from_json(error, url=url) if isinstance(error, Mapping) else None


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset; more than 6 fraction digits tolerated)."""
    if not text:
        return None
    cleaned = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = cleaned.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        cleaned = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Identifier:
    type: str
    value: str

    @classmethod
    def dns(cls, name: str) -> Identifier:
        return cls("dns", name)

    @classmethod
    def from_json(cls, data: object, url: str) -> Identifier:
        if not isinstance(data, Mapping):
            raise AcmeProtocolError(url, "an identifier is not a JSON object")
        return cls(_str(data, "type", url), _str(data, "value", url))

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True, slots=True)
class Directory:
    url: str
    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str
    key_change: str | None = None
    renewal_info: str | None = None
    terms_of_service: str | None = None
    website: str | None = None
    caa_identities: tuple[str, ...] = ()
    external_account_required: bool = False
    profiles: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Certificate profiles the CA offers (``meta.profiles``): name -> description,
    which Let's Encrypt gives as a URL; read-only."""

    @classmethod
    def from_json(cls, data: JsonObject, url: str) -> Directory:
        meta = data.get("meta")
        meta = meta if isinstance(meta, Mapping) else {}
        caa = meta.get("caaIdentities")
        return cls(
            url=url,
            new_nonce=_link(data, "newNonce", url),
            new_account=_link(data, "newAccount", url),
            new_order=_link(data, "newOrder", url),
            revoke_cert=_link(data, "revokeCert", url),
            key_change=_optional_link(data, "keyChange", url),
            renewal_info=_optional_link(data, "renewalInfo", url),
            terms_of_service=_optional_str(meta, "termsOfService"),
            website=_optional_str(meta, "website"),
            caa_identities=tuple(str(x) for x in caa) if isinstance(caa, list) else (),
            external_account_required=meta.get("externalAccountRequired") is True,
            profiles=_profiles(meta.get("profiles")),
        )


def _profiles(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        return MappingProxyType({})
    offered = {
        name: text
        for name, text in value.items()
        if isinstance(name, str) and isinstance(text, str)
    }
    return MappingProxyType(dict(sorted(offered.items())))


@dataclass(frozen=True, slots=True)
class Account:
    url: str
    status: Status
    contact: tuple[str, ...] = ()
    orders: str | None = None

    @classmethod
    def from_json(cls, data: JsonObject, url: str) -> Account:
        contact = data.get("contact")
        return cls(
            url=url,
            status=_status(data, url),
            contact=tuple(str(c) for c in contact) if isinstance(contact, list) else (),
            orders=_optional_link(data, "orders", url),
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    url: str
    type: str
    status: Status
    token: str | None = None
    validated: datetime | None = None
    error: AcmeProblem | None = None
    issuer_domain_names: tuple[str, ...] = ()
    """dns-persist-01: the issuer domains the CA accepts in a grant (first preferred)."""

    @classmethod
    def from_json(cls, data: JsonObject, url: str | None = None, *, base: str = "") -> Challenge:
        """``url``: where it was fetched; else its ``url`` member (relative to ``base``)."""
        where = url or _optional_str(data, "url") or "challenge"
        return cls(
            url=url if url is not None else urljoin(base, _str(data, "url", where)),
            type=_str(data, "type", where),
            status=_status(data, where),
            token=_optional_str(data, "token"),
            validated=parse_time(_optional_str(data, "validated")),
            error=_problem(data, where),
            issuer_domain_names=_issuer_domain_names(data),
        )


@dataclass(frozen=True, slots=True)
class Authorization:
    url: str
    status: Status
    identifier: Identifier
    challenges: tuple[Challenge, ...]
    wildcard: bool = False
    expires: datetime | None = None

    @property
    def domain(self) -> str:
        """The name the certificate covers: ``*.example.com`` for a wildcard authorization."""
        value = self.identifier.value
        return f"*.{value}" if self.wildcard and not value.startswith("*.") else value

    def challenge(self, kind: str) -> Challenge | None:
        return next((c for c in self.challenges if c.type == kind), None)

    @property
    def error(self) -> AcmeProblem | None:
        """The error of the challenge that failed, if any."""
        return next((c.error for c in self.challenges if c.error is not None), None)

    @classmethod
    def from_json(cls, data: JsonObject, url: str) -> Authorization:
        challenges = data.get("challenges")
        if not isinstance(challenges, list):
            raise AcmeProtocolError(url, "the authorization lists no challenges")
        return cls(
            url=url,
            status=_status(data, url),
            identifier=Identifier.from_json(data.get("identifier"), url),
            challenges=tuple(
                Challenge.from_json(c, base=url) for c in challenges if isinstance(c, Mapping)
            ),
            wildcard=data.get("wildcard") is True,
            expires=parse_time(_optional_str(data, "expires")),
        )


@dataclass(frozen=True, slots=True)
class Order:
    url: str
    status: Status
    identifiers: tuple[Identifier, ...]
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None = None
    expires: datetime | None = None
    error: AcmeProblem | None = None
    replaces: str | None = None
    retry_after: float | None = None
    """The Retry-After of the answer this was read from, if any."""
    profile: str | None = None

    @classmethod
    def from_json(cls, data: JsonObject, url: str, *, retry_after: float | None = None) -> Order:
        identifiers = data.get("identifiers")
        authorizations = data.get("authorizations")
        if not isinstance(identifiers, list) or not isinstance(authorizations, list):
            raise AcmeProtocolError(url, "the order lacks identifiers or authorizations")
        return cls(
            url=url,
            status=_status(data, url),
            identifiers=tuple(Identifier.from_json(i, url) for i in identifiers),
            authorizations=tuple(urljoin(url, str(a)) for a in authorizations),
            finalize=_link(data, "finalize", url),
            certificate=_optional_link(data, "certificate", url),
            expires=parse_time(_optional_str(data, "expires")),
            error=_problem(data, url),
            replaces=_optional_str(data, "replaces"),
            retry_after=retry_after,
            profile=_optional_str(data, "profile"),
        )


@dataclass(frozen=True, slots=True)
class RenewalInfo:
    """RFC 9773 renewal information: the suggested window and when to ask again."""

    start: datetime
    end: datetime
    explanation_url: str | None = None
    retry_after: float | None = None

    @classmethod
    def from_json(cls, data: JsonObject, url: str, retry_after: float | None) -> RenewalInfo:
        window = data.get("suggestedWindow")
        window = window if isinstance(window, Mapping) else {}
        start = parse_time(_optional_str(window, "start"))
        end = parse_time(_optional_str(window, "end"))
        if start is None or end is None or end < start:
            raise AcmeProtocolError(url, "renewal info lacks a valid suggestedWindow")
        return cls(start, end, _optional_link(data, "explanationURL", url), retry_after)


def _issuer_domain_names(data: JsonObject) -> tuple[str, ...]:
    names = data.get("issuer-domain-names")
    if not isinstance(names, list):
        return ()
    return tuple(name for name in names if isinstance(name, str) and name)
