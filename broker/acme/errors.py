"""The ACME client's error tree.

RFC 8555 problem documents become :class:`AcmeProblem` (one subclass per problem type
the client acts on); network failures, timeouts, unusable answers, failed
authorizations and solver failures are separate branches. Every class carries its
facts as attributes, so callers never parse messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeError(Exception):
    """Root of every error the ACME client raises."""


class AcmeNetworkError(AcmeError, OSError):
    """The CA could not be reached, or the connection broke (DNS, TCP, TLS)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class AcmeTimeoutError(AcmeError, TimeoutError):
    """An HTTP call to the CA took longer than its timeout."""

    def __init__(self, url: str, seconds: float, message: str | None = None) -> None:
        super().__init__(message or f"{url}: no answer within {seconds:g} s")
        self.url = url
        self.seconds = seconds


class PollTimeoutError(AcmeTimeoutError):
    """A resource was still ``pending``/``processing`` when polling gave up."""

    def __init__(self, url: str, seconds: float, status: str) -> None:
        super().__init__(url, seconds, f"{url} is still {status} after {seconds:g} s of polling")
        self.status = status


class AcmeProtocolError(AcmeError):
    """The CA answered something this client cannot use (no nonce, no Location, bad JSON)."""

    def __init__(self, url: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{url}: {detail}")
        self.url = url
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class Subproblem:
    """One problem about one identifier inside a problem document (RFC 8555 6.7.1)."""

    type: str
    detail: str
    identifier: str | None = None

    @property
    def code(self) -> str:
        return self.type.removeprefix(ACME_ERROR_PREFIX)


class AcmeProblem(AcmeError):
    """An RFC 8555 problem document answered by the CA.

    ``code`` is the type without ``urn:ietf:params:acme:error:`` (``rateLimited``);
    ``retry_after`` is in seconds when the response had a Retry-After header.
    Subclasses declare the ``problem_code`` they stand for.
    """

    problem_code: ClassVar[str] = ""
    _by_code: ClassVar[dict[str, type[AcmeProblem]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.problem_code:
            AcmeProblem._by_code[cls.problem_code] = cls

    def __init__(
        self,
        type: str,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        instance: str | None = None,
        identifier: str | None = None,
        subproblems: tuple[Subproblem, ...] = (),
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(type, detail)
        self.type = type
        self.detail = detail
        self.status = status
        self.title = title
        self.instance = instance
        self.identifier = identifier
        self.subproblems = subproblems
        self.retry_after = retry_after
        self.url = url

    @property
    def code(self) -> str:
        return self.type.removeprefix(ACME_ERROR_PREFIX)

    def __str__(self) -> str:
        text = f"{self.code}: {self.detail}" if self.detail else self.code
        facts = []
        if self.status is not None:
            facts.append(f"HTTP {self.status}")
        if self.retry_after is not None:
            facts.append(f"retry after {self.retry_after:g} s")
        if facts:
            text += f" ({', '.join(facts)})"
        for sub in self.subproblems:
            text += f"; {sub.identifier or '?'}: {sub.code}: {sub.detail}"
        return text

    @classmethod
    def from_json(
        cls,
        document: Mapping[str, Any],
        *,
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> AcmeProblem:
        """The problem as the subclass for its type (AcmeProblem for other types)."""
        kind = str(document.get("type") or "about:blank")
        problem_class = AcmeProblem._by_code.get(kind.removeprefix(ACME_ERROR_PREFIX), cls)
        if not kind.startswith(ACME_ERROR_PREFIX):
            problem_class = cls
        document_status = document.get("status")
        return problem_class(
            kind,
            str(document.get("detail") or ""),
            status=document_status if isinstance(document_status, int) else status,
            title=_optional_str(document.get("title")),
            instance=_optional_str(document.get("instance")),
            identifier=_identifier_value(document.get("identifier")),
            subproblems=tuple(_subproblems(document.get("subproblems"))),
            retry_after=retry_after,
            url=url,
        )


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _identifier_value(value: object) -> str | None:
    if isinstance(value, Mapping):
        return _optional_str(value.get("value"))
    return None


def _subproblems(value: object) -> list[Subproblem]:
    if not isinstance(value, list):
        return []
    return [
        Subproblem(
            str(item.get("type") or ""),
            str(item.get("detail") or ""),
            _identifier_value(item.get("identifier")),
        )
        for item in value
        if isinstance(item, Mapping)
    ]


class BadNonceError(AcmeProblem):
    """The nonce was refused twice in a row (the client retries once by itself)."""

    problem_code = "badNonce"


class RateLimitedError(AcmeProblem):
    """A CA rate limit was hit; ``retry_after`` says when to try again, if the CA said."""

    problem_code = "rateLimited"


class UnauthorizedError(AcmeProblem):
    problem_code = "unauthorized"


class RejectedIdentifierError(AcmeProblem):
    """The CA will not issue for an identifier (policy); see ``subproblems``."""

    problem_code = "rejectedIdentifier"


class OrderNotReadyError(AcmeProblem):
    problem_code = "orderNotReady"


class AccountDoesNotExistError(AcmeProblem):
    problem_code = "accountDoesNotExist"


class ExternalAccountRequiredError(AcmeProblem):
    """The CA requires External Account Binding: give an EAB key id and HMAC key."""

    problem_code = "externalAccountRequired"


class AlreadyRevokedError(AcmeProblem):
    problem_code = "alreadyRevoked"


class AlreadyReplacedError(AcmeProblem):
    """RFC 9773: the certificate named in ``replaces`` was already replaced."""

    problem_code = "alreadyReplaced"


class BadCsrError(AcmeProblem):
    problem_code = "badCSR"


class BadRevocationReasonError(AcmeProblem):
    problem_code = "badRevocationReason"


class MalformedError(AcmeProblem):
    problem_code = "malformed"


class ServerInternalError(AcmeProblem):
    problem_code = "serverInternal"


class InvalidProfileError(AcmeProblem):
    """The CA refused the certificate profile named in the order."""

    problem_code = "invalidProfile"


class AuthorizationFailedError(AcmeError):
    """An authorization became invalid; ``problem`` is the challenge's error, if given."""

    def __init__(self, identifier: str, url: str, status: str, problem: AcmeProblem | None):
        reason = str(problem) if problem is not None else "the CA gave no reason"
        super().__init__(f"authorization for {identifier} is {status}: {reason}")
        self.identifier = identifier
        self.url = url
        self.status = status
        self.problem = problem


class OrderFailedError(AcmeError):
    """The order became invalid (or ended in a state other than the one waited for)."""

    def __init__(self, url: str, status: str, problem: AcmeProblem | None):
        reason = str(problem) if problem is not None else "the CA gave no reason"
        super().__init__(f"order {url} is {status}: {reason}")
        self.url = url
        self.status = status
        self.problem = problem


class ChallengeUnavailableError(AcmeError):
    """The CA offered no dns-01 challenge for an identifier."""

    def __init__(self, identifier: str, offered: tuple[str, ...]) -> None:
        super().__init__(
            f"the CA offers no dns-01 challenge for {identifier} "
            f"(offered: {', '.join(offered) or 'none'})"
        )
        self.identifier = identifier
        self.offered = offered


class ProfileUnavailableError(AcmeError):
    """The order names a profile the CA's directory does not offer (nothing was sent)."""

    def __init__(self, profile: str, offered: tuple[str, ...], url: str | None = None) -> None:
        where = url or "the CA"
        if offered:
            choice = f"it offers: {', '.join(offered)}"
        else:
            choice = "it offers no profiles (its directory lists none); order without one"
        super().__init__(f"{where} offers no profile {profile!r}; {choice}")
        self.profile = profile
        self.offered = offered
        self.url = url


class KeyFormatError(AcmeError, ValueError):
    """A key or certificate could not be read (bad PEM, wrong passphrase, unsupported type)."""


class SolverError(AcmeError):
    """The DNS solver could not present, confirm or remove a challenge value."""

    def __init__(
        self,
        domain: str,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{domain}: {detail}")
        self.domain = domain
        self.detail = detail
        self.status = status
        self.code = code


class NotPropagatedError(SolverError, TimeoutError):
    """Not every authoritative nameserver served the value before the deadline."""
