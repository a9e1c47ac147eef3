"""The native v1 challenge API: present, cleanup, and a record's state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.api.bodies import ChallengeBody, read_json, timestamp
from broker.api.context import authenticate, context
from broker.store import ChallengeRecord


def challenge_json(record: ChallengeRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "fqdn": record.fqdn,
        "value": record.value,
        "zone": record.zone,
        "provider": record.provider,
        "owner": record.owner,
        "state": record.state.value,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "ended_at": timestamp(record.ended_at),
        "delegated_from": record.delegated_from,
    }


async def present(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, ChallengeBody)
    target, value = body.target(), body.checked_value()
    result = await context(request).service.present(principal, target, value, body.lease)
    location = f"/v1/challenges/{result.record.id}"
    return web.json_response(
        challenge_json(result.record),
        status=201 if result.created else 200,
        headers={"Location": location},
    )


async def cleanup(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, ChallengeBody)
    target, value = body.target(), body.checked_value()
    record = await context(request).service.cleanup(principal, target, value)
    return web.json_response(
        {
            "fqdn": target.fqdn,
            "value": value,
            "removed": record is not None,
            "challenge": None if record is None else challenge_json(record),
        }
    )


async def get_challenge(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    record = await context(request).service.get(principal, request.match_info["id"])
    return web.json_response(challenge_json(record))
