"""POST /v1/certificates and GET /v1/certificates/{id}: the broker signs a CSR through
ACME (asynchronous: 202 and poll, or ``"wait": true``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.api.bodies import (
    RECORD_ID,
    OptionalNumber,
    StrictBody,
    deadline_seconds,
    path_part,
    read_json,
    timestamp,
)
from broker.api.context import authenticate, context
from broker.certificates import CertificateService
from broker.errors import NotFoundError
from broker.store import CertificateOrderRecord, OrderState

DEFAULT_WAIT = 60.0


class CertificateBody(StrictBody):
    csr: str
    wait: bool = False
    timeout: OptionalNumber = None


def _certificates(request: web.Request) -> CertificateService:
    certificates = context(request).certificates
    if certificates is None:
        raise NotFoundError("certificate orders are not enabled in this broker")
    return certificates


def order_json(order: CertificateOrderRecord) -> dict[str, Any]:
    return {
        "id": order.id,
        "state": order.state.value,
        "names": list(order.names),
        "owner": order.owner,
        "directory": order.directory,
        "created_at": timestamp(order.created_at),
        "updated_at": timestamp(order.updated_at),
        "fullchain_pem": order.fullchain_pem,
        "error": None if order.error is None else json.loads(order.error),
    }


async def submit(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, CertificateBody)
    wait = deadline_seconds(body.timeout, "/timeout")
    certificates = _certificates(request)
    order = await certificates.submit(principal, body.csr)
    if body.wait:
        await certificates.wait(order.id, wait or DEFAULT_WAIT)
        order = await certificates.get(principal, order.id)
    return web.json_response(
        order_json(order),
        status=202 if order.state is OrderState.PENDING else 200,
        headers={"Location": f"/v1/certificates/{order.id}"},
    )


async def get_order(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    order_id = path_part(request, "id", RECORD_ID, "certificate order")
    order = await _certificates(request).get(principal, order_id)
    return web.json_response(order_json(order))
