"""Provider health as /readyz and `config check` report it."""

from __future__ import annotations

from broker.runtime import ProviderHealth, check_provider
from providers.base import Change, DnsProvider, ProviderAuthError


class Backend(DnsProvider):
    """A backend whose credentials are refused until ``fixed``."""

    def __init__(self) -> None:
        super().__init__("cloud")
        self.fixed = False
        self.checks = 0

    async def check(self) -> None:
        self.checks += 1
        if not self.fixed:
            raise ProviderAuthError("the API refused the credentials (403 AccessDenied)")

    def zones(self) -> tuple[str, ...]:
        return ("example.test.",)

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        return None

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return None

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return []


async def test_a_failing_provider_is_reported_with_its_reason():
    backend = Backend()
    assert await check_provider(backend) == {
        "ok": False,
        "detail": "the API refused the credentials (403 AccessDenied)",
    }
    backend.fixed = True
    assert await check_provider(backend) == {"ok": True}


async def test_health_is_remembered_briefly_then_asked_again():
    backend = Backend()
    health = ProviderHealth(ttl=60)
    assert (await health.check("cloud", backend))["ok"] is False
    backend.fixed = True
    assert (await health.check("cloud", backend))["ok"] is False
    assert backend.checks == 1
    fresh = ProviderHealth(ttl=0)
    assert (await fresh.check("cloud", backend))["ok"] is True


async def test_readyz_lists_each_provider(running):
    status, body, _ = await running.call("GET", "/readyz")
    assert status == 200
    assert body["checks"]["provider:embedded"] == {"ok": True}
