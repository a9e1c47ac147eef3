"""Provider health as /readyz and `config check` report it."""

from __future__ import annotations

from broker.runtime import ProviderHealth, check_provider
from broker.store import ChallengeIntent
from providers.base import Change, DnsProvider, ProviderAuthError
from tests.support import write_settings


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


FAILING_EMBEDDED = """
[providers.embedded]
type = "embedded"
zones = [{ name = "example.test" }]
[providers.embedded.faults]
error_rate = 1.0
[providers.embedded.retry]
deadline = "0.001s"
breaker_threshold = 3
breaker_cooldown = "60s"
"""


async def test_a_failing_provider_opens_its_breaker_in_readyz_metrics_and_answers(
    start_broker, tmp_path
):
    running = await start_broker(write_settings(tmp_path, FAILING_EMBEDDED))
    body = {"domain": "www.example.test", "value": "v"}
    status, problem, response = await running.call(
        "POST", "/v1/present", running.admin_token, json=body
    )
    assert (status, problem["code"], problem["retryable"]) == (502, "provider-failure", True)
    assert "Retry-After" not in response.headers
    for _ in range(2):  # 3 failed tries (an add, its take-back, an add) open the breaker
        status, problem, response = await running.call(
            "POST", "/v1/present", running.admin_token, json=body
        )
    assert status == 502
    assert "circuit breaker open" in problem["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    status, ready, _ = await running.call("GET", "/readyz")
    assert status == 503
    assert ready["checks"]["provider:embedded"]["circuit"] == "open"
    assert ready["checks"]["provider:embedded"]["ok"] is False
    _, metrics, _ = await running.call("GET", "/metrics")
    assert 'dns01_broker_provider_circuit_state{provider="embedded"} 2.0' in metrics
    _, values = await running.txt("_acme-challenge.www.example.test")
    assert values == []
    # What could not be taken back stays marked for the leader, and is not served.
    left = await running.broker.store.live_challenges()
    assert {record.intent for record in left} == {ChallengeIntent.REMOVE}


async def test_a_healthy_guarded_provider_reports_a_closed_circuit(start_broker, tmp_path):
    faults = "[providers.embedded]\ntype = 'embedded'\n[providers.embedded.faults]\n"
    running = await start_broker(write_settings(tmp_path, faults))
    _, ready, _ = await running.call("GET", "/readyz")
    assert ready["checks"]["provider:embedded"] == {"ok": True, "circuit": "closed"}


async def test_retries_carry_requests_through_intermittent_faults(start_broker, tmp_path):
    flaky = """
[providers.embedded]
type = "embedded"
[providers.embedded.faults]
error_rate = 0.3
throttle_rate = 0.2
seed = 3
[providers.embedded.retry]
backoff = "0.001s"
breaker_threshold = 1000
"""
    running = await start_broker(write_settings(tmp_path, flaky))
    for index in range(12):
        body = {"domain": "www.example.test", "value": f"v{index}"}
        status, _, _ = await running.call("POST", "/v1/present", running.admin_token, json=body)
        assert status in (200, 201)
    _, values = await running.txt("_acme-challenge.www.example.test")
    assert values == sorted(f"v{index}" for index in range(12))
    _, metrics, _ = await running.call("GET", "/metrics")
    retried = [
        line for line in metrics.splitlines()
        if line.startswith('dns01_broker_provider_retries_total{operation="add"')
    ]  # fmt: skip
    assert retried
    assert float(retried[0].split()[-1]) >= 1


async def test_a_reconcile_pass_finishes_marks_and_recounts_live_records(running):
    body = {"domain": "www.example.test", "value": "stays"}
    await running.call("POST", "/v1/present", running.admin_token, json=body)
    body = {"domain": "www.example.test", "value": "marked"}
    _, marked, _ = await running.call("POST", "/v1/present", running.admin_token, json=body)
    await running.broker.store.intend(marked["id"], ChallengeIntent.REMOVE)
    running.broker.metrics.live_records.set(99)  # drifted
    assert running.broker.reconciler is not None
    await running.broker.reconciler.run_once()
    _, values = await running.txt("_acme-challenge.www.example.test")
    assert values == ["stays"]
    _, metrics, _ = await running.call("GET", "/metrics")
    assert "dns01_broker_live_records 1.0" in metrics
    assert 'dns01_broker_unfinished_changes_total{intent="remove"} 1.0' in metrics
