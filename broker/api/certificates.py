"""POST /v1/certificates and GET /v1/certificates/{id}: the broker signs a CSR through
ACME (asynchronous: 202 and poll, or ``"wait": true``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.api.audit import note
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
from broker.auth import OIDC_PREFIX
from broker.certificates import CertificateService
from broker.errors import FieldProblem, InvalidRequestError, NotFoundError
from broker.store import CertificateOrderRecord, OrderState

DEFAULT_WAIT = 60.0


class CertificateBody(StrictBody):
    csr: str
    renew: bool = False
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
        "renew": order.renew,
        "not_before": None if order.not_before is None else timestamp(order.not_before),
        "not_after": None if order.not_after is None else timestamp(order.not_after),
        "renewals": order.renewals,
        "renewal_error": None if order.renewal_error is None else json.loads(order.renewal_error),
    }


async def submit(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, CertificateBody)
    if body.renew and principal.name.startswith(OIDC_PREFIX):
        raise InvalidRequestError(
            "an OIDC ID token cannot ask for renewal: renewals run while the ordering token "
            "is live; order without renew, or with a stored token",
            problems=[FieldProblem("/renew", "not with an OIDC ID token")],
        )
    wait = deadline_seconds(body.timeout, "/timeout")
    certificates = _certificates(request)
    order = await certificates.submit(principal, body.csr, renew=body.renew)
    note(request, target=order.id)
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


async def latest(request: web.Request) -> web.Response:
    """The order's newest certificate chain as PEM (for scripts: ``curl -o``)."""
    principal = await authenticate(request)
    order_id = path_part(request, "id", RECORD_ID, "certificate order")
    order = await _certificates(request).get(principal, order_id)
    if order.fullchain_pem is None:
        raise NotFoundError(f"certificate order {order_id!r} has no certificate ({order.state})")
    return web.Response(text=order.fullchain_pem, content_type="application/pem-certificate-chain")
