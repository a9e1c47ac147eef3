"""Request bodies: read at most the configured size, parse JSON, validate strictly."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from broker.dnsname import ChallengeTarget, validate_value
from broker.errors import (
    BrokerError,
    FieldProblem,
    InvalidRequestError,
    MalformedJsonError,
    NotFoundError,
)
from broker.tsig import TsigAlgorithm
from broker.values import MAX_WAIT_SECONDS, parse_duration

M = TypeVar("M", bound=BaseModel)


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("null is not allowed here: leave the field out instead")
    return value


def _integral(value: object) -> object:
    """JSON has one kind of number: ``60.0`` is the integer 60, as JSON Schema counts it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _lifetime(value: object) -> float | None:
    """A token lifetime: whole seconds, or text such as ``90d`` (None: no expiry)."""
    if value is None:
        return None
    value = _integral(value)
    if not isinstance(value, int | str) or isinstance(value, bool):
        raise ValueError("give whole seconds or text such as '90d', '12h', '1h30m'")
    return parse_duration(value)


# Optional fields: absent means "not given"; an explicit null is refused, as openapi.yaml says.
OptionalText = Annotated[str | None, BeforeValidator(_not_null)]
OptionalInt = Annotated[int | None, BeforeValidator(lambda v: _integral(_not_null(v)))]
OptionalNumber = Annotated[float | None, BeforeValidator(_not_null)]
Lifetime = Annotated[float | None, BeforeValidator(_lifetime)]


class ChallengeBody(StrictBody):
    """The body of present and cleanup (cleanup ignores ``lease``)."""

    domain: OptionalText = None
    fqdn: OptionalText = None
    value: str
    lease: OptionalInt = None
    wait: bool = False
    timeout: OptionalNumber = None

    def wait_seconds(self) -> float | None:
        """The propagation deadline asked for (None: the configured default)."""
        return deadline_seconds(self.timeout, "/timeout")

    def target(self) -> ChallengeTarget:
        if (self.domain is None) == (self.fqdn is None):
            raise InvalidRequestError(
                "give exactly one of 'domain' (www.example.com or *.example.com) or 'fqdn' "
                "(_acme-challenge.www.example.com.)",
                problems=[FieldProblem("/domain", "exactly one of domain or fqdn")],
            )
        if self.domain is not None:
            return _at("/domain", ChallengeTarget.from_domain, self.domain)
        assert self.fqdn is not None
        return _at("/fqdn", ChallengeTarget.from_fqdn, self.fqdn)

    def checked_value(self) -> str:
        return _at("/value", validate_value, self.value)


class TokenBody(StrictBody):
    name: str
    allow: list[str] = []
    cidrs: list[str] = []
    expires: Lifetime = None
    admin: bool = False
    tsig: bool | TsigAlgorithm = False
    """A TSIG key for RFC 2136 updates: true (hmac-sha256) or the algorithm."""
    one_shot: bool = False
    """Good for one present and the cleanup of that same name and value."""
    persist: bool = False
    """May create dns-persist-01 grants (standing issuance permissions) in its scopes."""


T = TypeVar("T")


def _at(pointer: str, parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except BrokerError as exc:
        raise type(exc)(exc.detail, problems=[FieldProblem(pointer, exc.detail)]) from None


async def read_json(request: web.Request, model: type[M]) -> M:
    body = await request.read()
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedJsonError(
            f"the body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise MalformedJsonError(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_field_problem(error) for error in exc.errors(include_url=False)]
        summary = "; ".join(f"{p.pointer}: {p.detail}" for p in problems)
        raise InvalidRequestError(
            f"the body does not match the schema: {summary}", problems=problems
        ) from None


def deadline_seconds(timeout: float | None, pointer: str) -> float | None:
    """A wait the client asked for, in (0, 600] seconds; None when it asked for none."""
    if timeout is not None and not 0 < timeout <= MAX_WAIT_SECONDS:
        detail = f"timeout must be more than 0 and at most {MAX_WAIT_SECONDS:g} seconds"
        raise InvalidRequestError(detail, problems=[FieldProblem(pointer, detail)])
    return timeout


RECORD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
USERNAME = re.compile(r"[0-9A-Fa-f-]{36}")


def path_part(request: web.Request, name: str, shape: re.Pattern[str], what: str) -> str:
    """A path parameter; one no record could be named by is simply not found (and never
    reaches the store)."""
    text = request.match_info[name]
    if not shape.fullmatch(text):
        raise NotFoundError(f"no {what} {text!r}")
    return text


def boolean_query(request: web.Request, name: str) -> bool:
    """A boolean query parameter as OpenAPI serializes one: ``true`` or ``false``."""
    text = request.query.get(name, "false")
    if text not in ("true", "false"):
        detail = f"query parameter {name!r} must be true or false, not {text!r}"
        raise InvalidRequestError(detail, problems=[FieldProblem(f"/{name}", detail)])
    return text == "true"


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _field_problem(error: Any) -> FieldProblem:
    pointer = "/" + "/".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return FieldProblem(pointer, "unknown field: check the spelling against openapi.yaml")
    if kind == "missing":
        return FieldProblem(pointer, "required field is missing")
    return FieldProblem(pointer, error["msg"].removeprefix("Value error, "))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH).total_seconds()
_EARLIEST = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()


def timestamp(seconds: float | None) -> str | None:
    """RFC 3339 UTC, millisecond precision. Never fails: a stored time that no calendar
    date can show (beyond year 9999, or not a number) is shown as the nearest one."""
    if seconds is None:
        return None
    if math.isnan(seconds):
        seconds = _LATEST
    moment = _EPOCH + timedelta(seconds=min(max(seconds, _EARLIEST), _LATEST))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
