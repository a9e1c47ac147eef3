"""The acme-dns API: POST /register, POST /update, GET /health.

Status codes, error strings and response bytes match acme-dns, so lego, cert-manager,
acme.sh, the certbot hook, Posh-ACME and Caddy work unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from broker.acmedns import AcmeDnsAccounts, AcmeDnsError, forbidden
from broker.api.audit import note
from broker.api.compat.bodies import NotJsonObjectError, compact_json, parse_object
from broker.api.context import authenticate, bearer_token, context, source_address
from broker.api.limits import charge_token
from broker.api.middleware import problem_response
from broker.errors import (
    BrokerError,
    ProviderFailureError,
    RateLimitedError,
    RetryLaterError,
    StoreUnavailableError,
)


def error_response(status: int, error: str) -> web.Response:
    return web.Response(
        status=status, text=f'{{"error": "{error}"}}', content_type="application/json"
    )


def _accounts(request: web.Request) -> AcmeDnsAccounts:
    accounts = context(request).acmedns
    assert accounts is not None, "acme-dns routes are added only with the face enabled"
    return accounts


async def register(request: web.Request) -> web.Response:
    try:
        await _check_may_register(request)
        allowfrom = _allowfrom(await request.read())
        account = await _accounts(request).register(allowfrom)
    except AcmeDnsError as exc:
        return error_response(exc.status, exc.error)
    except BrokerError as exc:
        return _broker_error(exc)
    record = account.record
    note(request, target=record.username)
    return compact_json(
        201,
        {
            "username": record.username,
            "password": account.password,
            "fulldomain": account.fulldomain,
            "subdomain": record.subdomain,
            "allowfrom": list(record.allowfrom),
        },
    )


async def update(request: web.Request) -> web.Response:
    accounts = _accounts(request)
    try:
        record = await accounts.authenticate(
            request.headers.get("X-Api-User"),
            request.headers.get("X-Api-Key"),
            source_address(request),
        )
        note(request, actor=f"acmedns:{record.username}", target=accounts.fulldomain(record))
        charge_token(request, f"acmedns:{record.username}")
        subdomain, txt = _update_fields(await request.read())
        await accounts.update(record, subdomain, txt)
    except AcmeDnsError as exc:
        return error_response(exc.status, exc.error)
    except BrokerError as exc:
        return _broker_error(exc)
    return web.Response(text=f'{{"txt": "{txt}"}}', content_type="application/json")


async def health(request: web.Request) -> web.Response:
    try:
        await context(request).store.ping()
    except StoreUnavailableError:
        return error_response(503, "db_error")
    return web.Response(status=200)


async def _check_may_register(request: web.Request) -> None:
    policy = context(request).registration
    if policy.mode == "open":
        return
    if policy.mode == "cidr":
        address = source_address(request)()
        if address is not None and any(address in network for network in policy.cidrs):
            return
    elif bearer_token(request):
        try:
            principal = await authenticate(request)
        except RateLimitedError:
            raise
        except BrokerError:
            raise forbidden() from None
        if principal.admin:
            return
    raise AcmeDnsError(403, "registration_not_allowed")


def _allowfrom(raw: bytes) -> list[str]:
    """acme-dns reads the register body only when there is one; bad JSON is a 400."""
    if not raw:
        return []
    try:
        data = parse_object(raw, allow_null=True)
    except NotJsonObjectError:
        raise AcmeDnsError(400, "malformed_json_payload") from None
    for key in ("subdomain", "txt", "password"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise AcmeDnsError(400, "malformed_json_payload")
    if data.get("username") is not None and not _is_uuid(data["username"]):
        raise AcmeDnsError(400, "malformed_json_payload")
    allowfrom: Any = data.get("allowfrom")
    if allowfrom is None:
        return []
    if not isinstance(allowfrom, list) or not all(isinstance(e, str) for e in allowfrom):
        raise AcmeDnsError(400, "malformed_json_payload")
    return allowfrom


def _update_fields(raw: bytes) -> tuple[str, str]:
    """A body acme-dns cannot decode leaves the subdomain empty: a mismatch, so 401."""
    try:
        data = parse_object(raw)
    except NotJsonObjectError:
        raise forbidden() from None
    subdomain, txt = data.get("subdomain", ""), data.get("txt", "")
    if not isinstance(subdomain, str) or not isinstance(txt, str):
        raise forbidden()
    return subdomain, txt


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _broker_error(exc: BrokerError) -> web.Response:
    if isinstance(exc, RetryLaterError):
        return problem_response(exc)
    if isinstance(exc, ProviderFailureError):
        return error_response(502, "provider_error")
    if isinstance(exc, StoreUnavailableError):
        return error_response(503, "db_error")
    return error_response(exc.status, exc.code.replace("-", "_"))
