"""acme-dns registrations, for admins: list them, delete one (its values go with it)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.acmedns import AcmeDnsAccounts
from broker.api.bodies import USERNAME, path_part, timestamp
from broker.api.context import authenticate, context
from broker.errors import NotFoundError
from broker.store import RegistrationRecord


def _accounts(request: web.Request) -> AcmeDnsAccounts:
    accounts = context(request).acmedns
    if accounts is None:
        raise NotFoundError("the acme-dns face is disabled (acmedns.enabled = false)")
    return accounts


def registration_json(accounts: AcmeDnsAccounts, record: RegistrationRecord) -> dict[str, Any]:
    return {
        "username": record.username,
        "subdomain": record.subdomain,
        "fulldomain": accounts.fulldomain(record),
        "allowfrom": list(record.allowfrom),
        "created_at": timestamp(record.created_at),
        "imported": record.key_hash is None,
    }


async def list_registrations(request: web.Request) -> web.Response:
    (await authenticate(request)).require_admin()
    accounts = _accounts(request)
    records = await accounts.store.list_registrations()
    return web.json_response(
        {"registrations": [registration_json(accounts, record) for record in records]}
    )


async def delete_registration(request: web.Request) -> web.Response:
    (await authenticate(request)).require_admin()
    accounts = _accounts(request)
    username = path_part(request, "username", USERNAME, "acme-dns registration with username")
    record = await accounts.delete(username)
    if record is None:
        raise NotFoundError(f"no acme-dns registration with username {username!r}")
    return web.json_response(registration_json(accounts, record))
