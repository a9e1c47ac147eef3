"""lego's httpreq API (also acme.sh dns_acmeproxy, Caddy libdns/acmeproxy, Traefik):
POST {base}/present and {base}/cleanup with Basic auth whose password is a broker token.

Default mode sends ``{"fqdn", "value"}``; RAW mode ``{"domain", "token", "keyAuth"}``.
The answer is 200 echoing the exact ``fqdn`` and ``value`` received (clients grep it).
lego follows CNAMEs before it sends, so ``fqdn`` may be a delegation target: it is
accepted when a name in the token's scope delegates to it, never by suffix alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from aiohttp import web

from broker.api.audit import note
from broker.api.compat.bodies import NotJsonObjectError, compact_json, parse_object
from broker.api.context import authenticate, context
from broker.delegation import authorized_target
from broker.dnsname import ChallengeTarget, validate_value
from broker.errors import (
    FieldProblem,
    InvalidRequestError,
    MalformedJsonError,
    UnauthorizedError,
)


async def present(request: web.Request) -> web.Response:
    return await _handle(request, present=True)


async def cleanup(request: web.Request) -> web.Response:
    return await _handle(request, present=False)


async def _handle(request: web.Request, *, present: bool) -> web.Response:
    principal = await authenticate(request, _basic_password(request))
    try:
        data = parse_object(await request.read())
    except NotJsonObjectError:
        raise MalformedJsonError("the body must be a JSON object") from None
    if "keyauth" in data:
        target, value, echo = _raw(data)
    else:
        fqdn, value = _text(data, "fqdn"), _text(data, "value")
        note(request, target=fqdn)
        target = await authorized_target(principal, fqdn, context(request).delegation)
        echo = {"fqdn": fqdn, "value": value}
    note(request, target=target.fqdn)
    validate_value(value)
    service = context(request).service
    if present:
        await service.present(principal, target, value, None)
    else:
        await service.cleanup(principal, target, value)
    return compact_json(200, echo)


def _basic_password(request: web.Request) -> str:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return encoded.strip()
    if scheme.lower() != "basic":
        raise UnauthorizedError("send Basic auth whose password is a broker token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise UnauthorizedError("the Basic auth header is not valid base64") from None
    return decoded.partition(":")[2]


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"'{key}' must be a string", problems=[FieldProblem(f"/{key}", "string required")]
        )
    return value


def _raw(data: dict[str, Any]) -> tuple[ChallengeTarget, str, dict[str, Any]]:
    """RAW mode: the value is base64url(sha256(keyAuth)), at the domain's challenge name."""
    domain, token, key_auth = _text(data, "domain"), _text(data, "token"), _text(data, "keyauth")
    digest = hashlib.sha256(key_auth.encode("utf-8")).digest()
    value = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    target = ChallengeTarget.from_domain(domain)
    return target, value, {"domain": domain, "token": token, "keyAuth": key_auth}
