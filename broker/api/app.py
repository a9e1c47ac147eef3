"""The route table (kept equal to openapi.yaml by a test) and the application factory."""

from __future__ import annotations

from aiohttp import web

from broker.api import audit, certificates, health, native, persist, registrations, tokens
from broker.api.compat import acmedns, httpreq
from broker.api.context import CONTEXT, ApiContext
from broker.api.limits import LIMITS_KEY, RequestLimits, limit
from broker.api.middleware import MAX_BODY_KEY, METRICS_KEY, OPERATIONS_KEY, Handler, observe
from broker.config import HttpSettings

Route = tuple[str, str, Handler]

ROUTES: tuple[Route, ...] = (
    ("GET", "/healthz", health.healthz),
    ("GET", "/readyz", health.readyz),
    ("GET", "/metrics", health.metrics),
    ("POST", "/v1/present", native.present),
    ("POST", "/v1/cleanup", native.cleanup),
    ("GET", "/v1/challenges/{id}", native.get_challenge),
    ("GET", "/v1/propagation", native.check_propagation),
    ("POST", "/v1/persist", persist.create),
    ("GET", "/v1/persist", persist.list_grants),
    ("DELETE", "/v1/persist/{id}", persist.remove),
    ("POST", "/v1/certificates", certificates.submit),
    ("GET", "/v1/certificates/{id}", certificates.get_order),
    ("GET", "/v1/certificates/{id}/latest", certificates.latest),
    ("GET", "/v1/whoami", tokens.whoami),
    ("GET", "/v1/tokens", tokens.list_tokens),
    ("POST", "/v1/tokens", tokens.create_token),
    ("POST", "/v1/tokens/exchange", tokens.exchange),
    ("DELETE", "/v1/tokens/{name}", tokens.revoke_token),
    ("POST", "/v1/tokens/{name}/rotate", tokens.rotate),
    ("GET", "/v1/audit", audit.list_events),
    ("GET", "/v1/registrations", registrations.list_registrations),
    ("DELETE", "/v1/registrations/{username}", registrations.delete_registration),
)

ACMEDNS_ROUTES: tuple[Route, ...] = (
    ("POST", "/register", acmedns.register),
    ("POST", "/update", acmedns.update),
    ("GET", "/health", acmedns.health),
)


def httpreq_routes(base: str) -> tuple[Route, ...]:
    return (
        ("POST", f"{base}/present", httpreq.present),
        ("POST", f"{base}/cleanup", httpreq.cleanup),
    )


def routes(ctx: ApiContext) -> list[Route]:
    table = list(ROUTES)
    if ctx.acmedns is not None:
        table.extend(ACMEDNS_ROUTES)
    if ctx.httpreq_base is not None:
        table.extend(httpreq_routes(ctx.httpreq_base))
    return table


def operations(ctx: ApiContext) -> dict[str, str]:
    table = {"/v1/present": "present", "/v1/cleanup": "cleanup", "/update": "present"}
    if ctx.httpreq_base is not None:
        table[f"{ctx.httpreq_base}/present"] = "present"
        table[f"{ctx.httpreq_base}/cleanup"] = "cleanup"
    return table


def build_app(ctx: ApiContext, limits: RequestLimits | None = None) -> web.Application:
    """``limits`` default to those of the default HttpSettings."""
    app = web.Application(
        client_max_size=ctx.max_body_bytes, middlewares=[observe, limit, audit.audited]
    )
    app[CONTEXT] = ctx
    app[LIMITS_KEY] = limits or RequestLimits(HttpSettings(), ctx.trusted_proxies)
    app[METRICS_KEY] = ctx.metrics
    app[MAX_BODY_KEY] = ctx.max_body_bytes
    app[OPERATIONS_KEY] = operations(ctx)
    for method, path, handler in routes(ctx):
        app.router.add_route(method, path, handler)
    return app
