"""What the handlers need, held on the application under typed keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.auth import Authenticator, IPAddress, IPNetwork, Principal, client_address
from broker.metrics import Metrics
from broker.service import ChallengeService
from broker.store import Store

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ApiContext:
    service: ChallengeService
    store: Store
    authenticator: Authenticator
    metrics: Metrics
    readiness: ReadinessCheck
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 65536


CONTEXT = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def authenticate(request: web.Request) -> Principal:
    ctx = context(request)

    def source() -> IPAddress | None:
        forwarded_for = request.headers.get("X-Forwarded-For")
        return client_address(request.remote, forwarded_for, ctx.trusted_proxies)

    return await ctx.authenticator.authenticate(bearer_token(request), source)
