"""The route table (kept equal to openapi.yaml by a test) and the application factory."""

from __future__ import annotations

from aiohttp import web

from broker.api import health, native, tokens
from broker.api.context import CONTEXT, ApiContext
from broker.api.middleware import MAX_BODY_KEY, METRICS_KEY, Handler, observe

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/healthz", health.healthz),
    ("GET", "/readyz", health.readyz),
    ("GET", "/metrics", health.metrics),
    ("POST", "/v1/present", native.present),
    ("POST", "/v1/cleanup", native.cleanup),
    ("GET", "/v1/challenges/{id}", native.get_challenge),
    ("GET", "/v1/tokens", tokens.list_tokens),
    ("POST", "/v1/tokens", tokens.create_token),
    ("DELETE", "/v1/tokens/{name}", tokens.revoke_token),
)


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(client_max_size=ctx.max_body_bytes, middlewares=[observe])
    app[CONTEXT] = ctx
    app[METRICS_KEY] = ctx.metrics
    app[MAX_BODY_KEY] = ctx.max_body_bytes
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
