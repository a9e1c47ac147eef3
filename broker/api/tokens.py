"""Token management over HTTP (admin tokens only); the CLI does the same on the store."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from broker.api.audit import note
from broker.api.bodies import (
    Lifetime,
    StrictBody,
    TokenBody,
    boolean_query,
    path_part,
    read_json,
    timestamp,
)
from broker.api.context import PRINCIPAL, authenticate, bearer_token, context, source_address
from broker.api.limits import charge_token
from broker.auth import (
    RESERVED_TOKEN_NAMES,
    TOKEN_NAME,
    IssuedToken,
    Principal,
    is_jwt,
    issue_token,
    rotate_token,
)
from broker.dnsname import Scope
from broker.errors import NotFoundError, UnauthorizedError
from broker.oidc.verify import EXCHANGED_PREFIX, OidcRefusal
from broker.secretbox import SecretBox
from broker.store import Store, TokenRecord
from broker.tsig import DEFAULT_ALGORITHM

log = logging.getLogger(__name__)


def token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "allow": list(record.scopes),
        "cidrs": list(record.cidrs),
        "admin": record.admin,
        "persist": record.persist,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "revoked_at": timestamp(record.revoked_at),
        "tsig": None
        if record.tsig_name is None
        else {"name": record.tsig_name, "algorithm": record.tsig_algorithm},
        "one_shot": record.one_shot is not None,
    }


async def whoami(request: web.Request) -> web.Response:
    """The caller's own token: its name and what it may do (clients check their names
    against it before ordering a certificate)."""
    principal = await authenticate(request)
    return web.json_response(
        {
            "name": principal.name,
            "allow": [str(scope) for scope in principal.scopes],
            "admin": principal.admin,
            "persist": principal.persist,
        }
    )


async def list_tokens(request: web.Request) -> web.Response:
    (await authenticate(request)).require_admin()
    include_revoked = boolean_query(request, "all")
    records = await context(request).store.list_tokens(include_revoked=include_revoked)
    return web.json_response({"tokens": [token_json(record) for record in records]})


async def create_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    principal.require_admin()
    body = await read_json(request, TokenBody)
    note(request, target=body.name)
    algorithm = DEFAULT_ALGORITHM if body.tsig is True else (body.tsig or None)
    issued = issue_token(
        body.name, body.allow, cidrs=body.cidrs, admin=body.admin, lifetime=body.expires,
        tsig=algorithm, box=context(request).secret_box, one_shot=body.one_shot,
        persist=body.persist,
    )  # fmt: skip
    await context(request).store.create_token(issued.record)
    log.info(
        "token created name=%s scopes=%s admin=%s persist=%s tsig=%s by=%s",
        issued.record.name, ",".join(issued.record.scopes), issued.record.admin,
        issued.record.persist,
        issued.record.tsig_algorithm or "none", principal.name,
    )  # fmt: skip
    return web.json_response(
        shown_once(issued),
        status=201,
        headers={"Location": f"/v1/tokens/{issued.record.name}", "Cache-Control": "no-store"},
    )


def _not_a_token(request: web.Request) -> None:
    """``/v1/tokens/exchange`` is no token's path (that name is reserved): only POST."""
    if request.match_info.get("name") in RESERVED_TOKEN_NAMES:
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])


async def revoke_token(request: web.Request) -> web.Response:
    _not_a_token(request)
    principal = await authenticate(request)
    principal.require_admin()
    name = path_part(request, "name", TOKEN_NAME, "live token named")
    record = await context(request).store.revoke_token(name, context(request).service.now())
    if record is None:
        raise NotFoundError(f"no live token named {name!r}")
    context(request).authenticator.forget(record.key)
    log.info("token revoked name=%s by=%s", name, principal.name)
    return web.json_response(token_json(record))


class ExchangeBody(StrictBody):
    expires: Lifetime = None
    """A shorter lifetime than oidc.exchange_lifetime (never longer, nor past the ID
    token's own expiry)."""


async def exchange(request: web.Request) -> web.Response:
    """POST /v1/tokens/exchange: a CI job's OIDC ID token (as bearer) for a broker token
    with the scopes of the first matching rule, short-lived, never admin. Each ID token
    is exchanged once (its ``jti``, kept in the store until it expires)."""
    ctx = context(request)
    oidc = ctx.authenticator.oidc
    token = bearer_token(request)
    if oidc is None:
        raise UnauthorizedError("this broker trusts no OIDC issuer (configure [[oidc.issuers]])")
    if not token or not is_jwt(token):
        raise UnauthorizedError("send the job's OIDC ID token: 'Authorization: Bearer <JWT>'")
    body = await read_json(request, ExchangeBody) if await request.read() else ExchangeBody()
    source = source_address(request)()
    identity = await oidc.verify(token, source=source)
    request[PRINCIPAL] = Principal(
        identity.name, tuple(Scope.parse(s) for s in identity.scopes), admin=False
    )
    charge_token(request, f"token:{identity.name}")
    now = ctx.service.now()
    lifetime = min(body.expires or oidc.settings.exchange_lifetime,
                   oidc.settings.exchange_lifetime, identity.expires_at - now)  # fmt: skip
    if lifetime <= 0:
        oidc.refused(identity, "expired", source)
        raise OidcRefusal("expired", "it expires now (within the clock skew)")
    kept_until = identity.expires_at + oidc.settings.clock_skew
    replay_key = identity.replay_key(token)
    if not await ctx.store.claim_replay(identity.issuer, replay_key, kept_until, now):
        oidc.refused(identity, "replayed", source)
        raise OidcRefusal("replayed", "it was exchanged already (each ID token is good once)")
    name = f"{EXCHANGED_PREFIX}{identity.issuer}-{secrets.token_hex(6)}"
    issued = issue_token(name, identity.scopes, lifetime=lifetime, now=now)
    await ctx.store.create_token(issued.record)
    note(request, target=name)
    log.info("token exchanged name=%s for=%s scopes=%s expires_in=%.0fs", name, identity.name,
             ",".join(identity.scopes), lifetime)  # fmt: skip
    return web.json_response(
        shown_once(issued),
        status=201,
        headers={"Location": f"/v1/tokens/{name}", "Cache-Control": "no-store"},
    )


class RotateBody(StrictBody):
    tsig: bool = False
    """Give the token's TSIG key a new secret too (else it is kept)."""


async def rotate_token_named(
    store: Store, name: str, *, tsig: bool = False, box: SecretBox | None = None
) -> IssuedToken:
    """Give the live token ``name`` a new secret (the old one is refused from now on)."""
    live = next((t for t in await store.list_tokens() if t.name == name), None)
    issued = None if live is None else rotate_token(live, tsig=tsig, box=box)
    stored = None if issued is None else await store.rotate_token(name, issued.record)
    if issued is None or stored is None:
        raise NotFoundError(f"no live token named {name!r}")
    return IssuedToken(secret=issued.secret, record=stored, tsig=issued.tsig)


async def rotate(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    principal.require_admin()
    name = path_part(request, "name", TOKEN_NAME, "live token named")
    body = await read_json(request, RotateBody) if await request.read() else RotateBody()
    ctx = context(request)
    issued = await rotate_token_named(ctx.store, name, tsig=body.tsig, box=ctx.secret_box)
    ctx.authenticator.forget(issued.record.key)
    log.info("token rotated name=%s tsig=%s by=%s", name, "new" if issued.tsig else "kept",
             principal.name)  # fmt: skip
    return web.json_response(shown_once(issued), headers={"Cache-Control": "no-store"})


def shown_once(issued: IssuedToken) -> dict[str, Any]:
    """A token's JSON with its secret (and its TSIG key's, when new): shown only now."""
    shown = {"token": issued.secret, **token_json(issued.record)}
    if issued.tsig is not None:
        shown["tsig"] = {**shown["tsig"], "secret": issued.tsig.secret_b64}
    return shown
