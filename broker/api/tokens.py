"""Token management over HTTP (admin tokens only); the CLI does the same on the store."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from broker.api.bodies import TokenBody, boolean_query, path_part, read_json, timestamp
from broker.api.context import authenticate, context
from broker.auth import TOKEN_NAME, issue_token
from broker.errors import NotFoundError
from broker.store import TokenRecord
from broker.tsig import DEFAULT_ALGORITHM

log = logging.getLogger(__name__)


def token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "allow": list(record.scopes),
        "cidrs": list(record.cidrs),
        "admin": record.admin,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "revoked_at": timestamp(record.revoked_at),
        "tsig": None
        if record.tsig_name is None
        else {"name": record.tsig_name, "algorithm": record.tsig_algorithm},
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
    algorithm = DEFAULT_ALGORITHM if body.tsig is True else (body.tsig or None)
    issued = issue_token(
        body.name, body.allow, cidrs=body.cidrs, admin=body.admin, lifetime=body.expires,
        tsig=algorithm, box=context(request).secret_box,
    )  # fmt: skip
    await context(request).store.create_token(issued.record)
    log.info(
        "token created name=%s scopes=%s admin=%s tsig=%s by=%s",
        issued.record.name, ",".join(issued.record.scopes), issued.record.admin,
        issued.record.tsig_algorithm or "none", principal.name,
    )  # fmt: skip
    created = {"token": issued.secret, **token_json(issued.record)}
    if issued.tsig is not None:
        created["tsig"] = {**created["tsig"], "secret": issued.tsig.secret_b64}
    return web.json_response(
        created,
        status=201,
        headers={"Location": f"/v1/tokens/{issued.record.name}", "Cache-Control": "no-store"},
    )


async def revoke_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    principal.require_admin()
    name = path_part(request, "name", TOKEN_NAME, "live token named")
    record = await context(request).store.revoke_token(name, context(request).service.now())
    if record is None:
        raise NotFoundError(f"no live token named {name!r}")
    log.info("token revoked name=%s by=%s", name, principal.name)
    return web.json_response(token_json(record))
