"""One error tree for the whole broker.

Each class declares the HTTP status, a stable machine code and whether a retry can
help. Only the HTTP middleware turns these into responses; everything else raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one part of the input (a JSON pointer into the request body)."""

    pointer: str
    detail: str


class BrokerError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        problems: Sequence[FieldProblem] = (),
        retryable: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = tuple(problems)
        self.is_retryable = type(self).retryable if retryable is None else retryable
        self.extra = dict(extra or {})
        """More members of the problem document (RFC 9457 extensions)."""
        self.retry_after: float | None = None
        """Seconds after which a retry may succeed, sent as ``Retry-After`` when set."""


class InvalidRequestError(BrokerError):
    status = 400
    code = "invalid-request"
    title = "The request body does not match the schema"


class MalformedJsonError(BrokerError):
    status = 400
    code = "malformed-json"
    title = "The request body is not a JSON object"


class InvalidNameError(BrokerError, ValueError):
    status = 400
    code = "invalid-name"
    title = "The domain name is not valid"


class InvalidValueError(BrokerError, ValueError):
    status = 400
    code = "invalid-value"
    title = "The TXT value is not valid"


class InvalidLeaseError(BrokerError, ValueError):
    status = 400
    code = "invalid-lease"
    title = "The lease is out of range"


class UnauthorizedError(BrokerError):
    status = 401
    code = "unauthorized"
    title = "A valid bearer token is required"


class ForbiddenNameError(BrokerError):
    status = 403
    code = "forbidden-name"
    title = "The token's scope does not cover this name"


class ForbiddenSourceError(BrokerError):
    status = 403
    code = "forbidden-source"
    title = "The token may not be used from this address"


class AdminRequiredError(BrokerError):
    status = 403
    code = "admin-required"
    title = "This operation needs an admin token"


class NoMatchingRuleError(BrokerError):
    status = 403
    code = "no-matching-rule"
    title = "No OIDC rule grants this identity a scope"


class OneShotUsedError(BrokerError):
    status = 403
    code = "one-shot-used"
    title = "This one-shot token was used for another challenge"


class PersistRightRequiredError(BrokerError):
    status = 403
    code = "persist-right-required"
    title = "This operation needs a token with the persist right"


class NotFoundError(BrokerError):
    status = 404
    code = "not-found"
    title = "No such resource"


class MethodNotAllowedError(BrokerError):
    status = 405
    code = "method-not-allowed"
    title = "Method not allowed on this resource"


class ConflictError(BrokerError):
    status = 409
    code = "conflict"
    title = "The resource already exists"


class TooManyValuesError(BrokerError):
    status = 409
    code = "too-many-values"
    title = "The name holds as many values as allowed"


class BodyTooLargeError(BrokerError):
    status = 413
    code = "body-too-large"
    title = "The request body is too large"


class NoZoneError(BrokerError):
    status = 422
    code = "no-zone"
    title = "No configured zone contains this name"


class ProviderFailureError(BrokerError):
    status = 502
    code = "provider-failure"
    title = "The DNS provider refused or failed the change"

    def __init__(
        self, detail: str, *, provider: str, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(detail, retryable=retryable)
        self.provider = provider
        self.retry_after = retry_after  # while the provider's circuit breaker is open


class DnsLookupError(BrokerError):
    status = 502
    code = "dns-lookup-failed"
    title = "A DNS lookup the request needs failed"
    retryable = True


class PropagationTimeoutError(BrokerError):
    status = 504
    code = "propagation-timeout"
    title = "Not every authoritative nameserver serves the value yet"
    retryable = True


class StoreUnavailableError(BrokerError):
    status = 503
    code = "store-unavailable"
    title = "The record store is unavailable"
    retryable = True


class RetryLaterError(BrokerError):
    """A refusal that says when to come back: the response carries ``Retry-After``."""

    retryable = True

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RequestTimeoutError(BrokerError):
    status = 408
    code = "request-timeout"
    title = "The request body did not arrive in time"
    retryable = True


class RateLimitedError(RetryLaterError):
    status = 429
    code = "rate-limited"
    title = "Too many requests from this address or token"


class OverloadedError(RetryLaterError):
    status = 503
    code = "overloaded"
    title = "The broker is handling as many requests as it may"


class IdentityProviderError(BrokerError):
    status = 503
    code = "oidc-unavailable"
    title = "The OIDC issuer's keys could not be fetched"
    retryable = True
