"""dns-persist-01 grants (CA/Browser Forum BR 3.2.2.4.22; draft-ietf-acme-dns-persist):
a TXT record at ``_validation-persist.<name>`` in RFC 8659 issue-value syntax,
``<issuer-domain>; accounturi=<ACME account URL>[; policy=wildcard][; persistUntil=<t>]``,
which lets that ACME account be issued certificates for the name with no per-order
challenge: a standing permission to issue, so the broker builds the value itself from
checked parts (no caller text reaches the record unchecked) and keeps it as a live record
whose expiry is ``persistUntil`` (or never), removed by the reconciler after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from broker.dnsname import MAX_NAME_OCTETS, MAX_VALUE_CHARS, ChallengeTarget, normalize_name
from broker.errors import BrokerError, FieldProblem, InvalidRequestError

PERSIST_LABEL = "_validation-persist"
FOREVER = 253402300799.0
"""The expiry kept for a grant without ``persistUntil`` (9999-12-31T23:59:59Z)."""

_LABEL = re.compile(r"[A-Za-z0-9](?:-*[A-Za-z0-9])*")
"""RFC 8659 ``label`` (also its ``tag``)."""
_PARAMETER_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e]*")
"""RFC 8659 ``value``: printable ASCII but space and ``;``."""
_WSP = " \t"
_ACCOUNT_URI = re.compile(
    r"https://[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?(?:[/?][!#-:<-\[\]-~]*)?"
)
"""What the broker writes as ``accounturi``: https, a host name (or IPv4 address), an
optional port, then a path and query of printable ASCII without space, ``;``, ``"`` or
``\\`` (openapi.yaml says the same)."""
MAX_ISSUER = 63
MAX_ACCOUNT_URI = 130
"""With these, every grant's value fits one 255-octet TXT string."""


class IssueValueError(ValueError):
    """Text that is not an RFC 8659 issue-value, or not a dns-persist-01 grant."""


def is_grant_name(fqdn: str) -> bool:
    return fqdn.startswith(PERSIST_LABEL + ".")


def grant_target(domain: str) -> ChallengeTarget:
    """Where the grant for ``domain`` (``example.com``; ``*.`` is the wildcard policy,
    not part of the name) lives: ``_validation-persist.example.com.``."""
    base = normalize_name(domain.removeprefix("*."), what="domain")
    fqdn = f"{PERSIST_LABEL}.{base}"
    if len(fqdn) > MAX_NAME_OCTETS + 1:
        raise InvalidRequestError(
            f"domain {domain!r} is too long to hold {PERSIST_LABEL} below it",
            problems=[FieldProblem("/domain", "too long")],
        )
    return ChallengeTarget(base=base, fqdn=fqdn)


@dataclass(frozen=True, slots=True)
class PersistGrant:
    """The parts of one grant's record; ``issuer`` lower case without a final dot."""

    issuer: str
    account_uri: str
    wildcard: bool = False
    persist_until: int | None = None

    @classmethod
    def build(
        cls,
        issuer: str,
        account_uri: str,
        wildcard: bool = False,
        persist_until: int | None = None,
        *,
        now: float,
    ) -> PersistGrant:
        """A grant from a request's parts; every problem is reported at once."""
        problems: list[FieldProblem] = []
        checked_issuer = _checked(check_issuer, issuer, "/issuer", problems)
        checked_uri = _checked(check_account_uri, account_uri, "/account_uri", problems)
        if persist_until is not None and not now < persist_until < FOREVER:
            problems.append(
                FieldProblem(
                    "/persist_until",
                    "persist_until must be a Unix time in the future (seconds, before 10000-01-01)",
                )
            )
        if problems:
            raise InvalidRequestError(
                "; ".join(f"{p.pointer[1:]}: {p.detail}" for p in problems), problems=problems
            )
        grant = cls(checked_issuer or "", checked_uri or "", wildcard, persist_until)
        if len(grant.value()) > MAX_VALUE_CHARS:
            detail = f"the record would be longer than {MAX_VALUE_CHARS} characters"
            raise InvalidRequestError(detail, problems=[FieldProblem("/account_uri", detail)])
        return grant

    def value(self) -> str:
        parts = [self.issuer, f"accounturi={self.account_uri}"]
        if self.wildcard:
            parts.append("policy=wildcard")
        if self.persist_until is not None:
            parts.append(f"persistUntil={self.persist_until}")
        return "; ".join(parts)

    @property
    def expires_at(self) -> float:
        return FOREVER if self.persist_until is None else float(self.persist_until)

    @classmethod
    def parse(cls, text: str) -> PersistGrant:
        """A grant read back from its record: a strict RFC 8659 issue-value with an issuer,
        exactly one ``accounturi``, and ``policy``/``persistUntil`` at most once each."""
        issuer, parameters = parse_issue_value(text)
        if issuer is None:
            raise IssueValueError(f"{text!r} names no issuer")
        if "accounturi" not in parameters:
            raise IssueValueError(f"{text!r} has no accounturi")
        policy = parameters.get("policy")
        if policy is not None and policy.lower() != "wildcard":
            raise IssueValueError(f"{text!r}: policy {policy!r} is not 'wildcard'")
        until = parameters.get("persistuntil")
        if until is not None and not until.isdigit():
            raise IssueValueError(f"{text!r}: persistUntil {until!r} is not a Unix time")
        return cls(
            issuer=issuer.lower(),
            account_uri=parameters["accounturi"],
            wildcard=policy is not None,
            persist_until=None if until is None else int(until),
        )


def parse_issue_value(text: str) -> tuple[str | None, dict[str, str]]:
    """RFC 8659 section 4.2: ``issue-value = *WSP [issuer-domain-name *WSP]
    [";" *WSP [parameters *WSP]]``; tags are returned lower case, and a tag given twice
    is refused (a grant must read one way only)."""
    head, semicolon, rest = text.partition(";")
    issuer = head.strip(_WSP) or None
    if issuer is not None and not all(_LABEL.fullmatch(label) for label in issuer.split(".")):
        raise IssueValueError(f"{issuer!r} is not an issuer domain name")
    parameters: dict[str, str] = {}
    if not semicolon or not rest.strip(_WSP):
        return issuer, parameters
    for parameter in rest.split(";"):
        tag, equals, value = parameter.strip(_WSP).partition("=")
        tag, value = tag.rstrip(_WSP), value.lstrip(_WSP)
        if not equals or not _LABEL.fullmatch(tag) or not _PARAMETER_VALUE.fullmatch(value):
            raise IssueValueError(f"{parameter!r} is not a parameter (tag=value)")
        if tag.lower() in parameters:
            raise IssueValueError(f"parameter {tag!r} is given twice")
        parameters[tag.lower()] = value
    return issuer, parameters


def check_issuer(issuer: str) -> str:
    """The CA's issuer domain name (as its CAA records name it): letters, digits and
    hyphens in dot-separated labels, at least two of them."""
    name = issuer.lower().removesuffix(".")
    labels = name.split(".")
    if (
        len(labels) < 2
        or len(name) > MAX_ISSUER
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise InvalidRequestError(
            f"issuer {issuer!r} is not a domain name such as letsencrypt.org (at most "
            f"{MAX_ISSUER} characters in labels of letters, digits and inner hyphens; no "
            "spaces, ';', '=' or underscores)"
        )
    return name


def check_account_uri(uri: str) -> str:
    """An ACME account URL: https, a host, and nothing that could end the parameter or
    start another (no whitespace, ``;``, quotes, backslashes or non-printable text)."""
    if not uri.isascii() or not _PARAMETER_VALUE.fullmatch(uri) or '"' in uri or "\\" in uri:
        raise InvalidRequestError(
            "account_uri may hold only printable ASCII without spaces, ';', quotes or "
            "backslashes: give the ACME account URL as the CA returned it"
        )
    if len(uri) > MAX_ACCOUNT_URI or not _ACCOUNT_URI.fullmatch(uri):
        raise InvalidRequestError(
            f"account_uri {uri!r} must be an https URL with a host name (at most "
            f"{MAX_ACCOUNT_URI} characters), as ACME account URLs are"
        )
    return uri


def _checked(
    check: Callable[[str], str], text: str, pointer: str, problems: list[FieldProblem]
) -> str | None:
    try:
        return check(text)
    except BrokerError as exc:
        problems.append(FieldProblem(pointer, exc.detail))
        return None
