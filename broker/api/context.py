"""What the handlers need, held on the application under typed keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from broker.acmedns import AcmeDnsAccounts
from broker.api.limits import charge_token
from broker.audit import AuditLog
from broker.auth import Authenticator, IPAddress, IPNetwork, Principal, client_address
from broker.certificates import CertificateService
from broker.delegation import DelegationResolver
from broker.metrics import Metrics
from broker.secretbox import SecretBox
from broker.service import ChallengeService
from broker.store import Store
from broker.watch import PropagationWatch

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    """Who may register acme-dns accounts: anyone, callers from ``cidrs``, or admins."""

    mode: Literal["open", "cidr", "closed"] = "open"
    cidrs: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiContext:
    service: ChallengeService
    store: Store
    authenticator: Authenticator
    metrics: Metrics
    readiness: ReadinessCheck
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 65536
    acmedns: AcmeDnsAccounts | None = None
    registration: RegistrationPolicy = RegistrationPolicy()
    delegation: DelegationResolver | None = None
    watch: PropagationWatch | None = None
    certificates: CertificateService | None = None
    httpreq_base: str | None = ""
    secret_box: SecretBox = field(default_factory=lambda: SecretBox(None))
    audit: AuditLog | None = None


CONTEXT = web.AppKey("context", ApiContext)
PRINCIPAL = web.RequestKey("principal", Principal)
"""Who the request authenticated as, for the audit log (broker.api.audit)."""


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def source_address(request: web.Request) -> Callable[[], IPAddress | None]:
    """The caller's address, resolved on first use (X-Forwarded-For from trusted proxies)."""

    def source() -> IPAddress | None:
        forwarded_for = request.headers.get("X-Forwarded-For")
        return client_address(request.remote, forwarded_for, context(request).trusted_proxies)

    return source


async def authenticate(request: web.Request, secret: str | None = None) -> Principal:
    """The principal of the bearer token (or of ``secret``, for faces that carry it
    elsewhere, such as Basic auth); each call counts against the token's rate limit."""
    token = bearer_token(request) if secret is None else secret
    principal = await context(request).authenticator.authenticate(token, source_address(request))
    request[PRINCIPAL] = principal
    charge_token(request, f"token:{principal.name}")
    return principal
