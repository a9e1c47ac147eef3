"""Retries, the circuit breaker and injected faults around a provider."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from providers.base import (
    Change,
    DnsProvider,
    ProviderAuthError,
    ProviderError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from providers.embedded import EmbeddedProvider, EmbeddedSettings
from providers.faults import FaultSettings, FaultyProvider
from providers.resilience import (
    BreakerState,
    CircuitOpenError,
    ResilientProvider,
    RetrySettings,
)

ZONE, NAME = "example.test.", "_acme-challenge.example.test."


class Scripted(DnsProvider):
    """Answers each add with the next outcome of its script: None (success), an error
    to raise, or "hang" (never answers)."""

    def __init__(self, *script: ProviderError | str | None) -> None:
        super().__init__("scripted")
        self.script = list(script)
        self.calls = 0

    async def check(self) -> None:
        return None

    def zones(self) -> tuple[str, ...]:
        return (ZONE,)

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome == "hang":
            await asyncio.Event().wait()
        if isinstance(outcome, ProviderError):
            raise outcome
        return None

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return await self.add_txt(zone, name, value, 0)

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


FAST = RetrySettings(attempt_timeout=0.05, deadline=2, backoff=0.001, max_backoff=0.002)


def guarded(inner: DnsProvider, settings: RetrySettings = FAST, **kwargs) -> ResilientProvider:
    return ResilientProvider(inner, settings, **kwargs)


async def test_a_throttled_call_is_tried_again_until_it_succeeds():
    retried: list[str] = []
    inner = Scripted(ProviderThrottledError("slow down"), ProviderUnavailableError("503"), None)
    await guarded(inner, on_retry=retried.append).add_txt(ZONE, NAME, "v", 60)
    assert inner.calls == 3
    assert retried == ["add", "add"]


async def test_a_refusal_is_never_repeated():
    inner = Scripted(ProviderAuthError("bad credentials"))
    provider = guarded(inner)
    with pytest.raises(ProviderAuthError):
        await provider.add_txt(ZONE, NAME, "v", 60)
    assert inner.calls == 1
    assert provider.breaker.state is BreakerState.CLOSED


async def test_a_call_that_never_answers_is_abandoned_and_tried_again():
    inner = Scripted("hang", None)
    await guarded(inner).add_txt(ZONE, NAME, "v", 60)
    assert inner.calls == 2


async def test_every_call_ends_by_its_deadline_with_a_retryable_error():
    inner = Scripted(*(["hang"] * 1000))
    settings = RetrySettings(
        attempt_timeout=0.02, deadline=0.2, backoff=0.001, breaker_threshold=1000
    )
    with pytest.raises(ProviderUnavailableError) as caught:
        await asyncio.wait_for(guarded(inner, settings).add_txt(ZONE, NAME, "v", 60), 5)
    assert caught.value.retryable
    assert "did not answer" in str(caught.value)
    assert 2 <= inner.calls < 1000


async def test_the_breaker_opens_refuses_at_once_then_lets_one_probe_through():
    clock = Clock()
    settings = FAST.model_copy(update={"breaker_threshold": 3, "breaker_cooldown": 30})
    inner = Scripted(*([ProviderUnavailableError("down")] * 3))
    provider = guarded(inner, settings.model_copy(update={"deadline": 0.001}), clock=clock)
    for _ in range(3):
        with pytest.raises(ProviderUnavailableError):
            await provider.add_txt(ZONE, NAME, "v", 60)
    assert provider.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as refused:
        await provider.add_txt(ZONE, NAME, "v", 60)
    assert inner.calls == 3  # refused without calling the provider
    assert refused.value.retryable
    assert refused.value.retry_after == 30
    clock.now += 30
    assert provider.breaker.state is BreakerState.HALF_OPEN
    await provider.add_txt(ZONE, NAME, "v", 60)  # the probe succeeds
    assert provider.breaker.state is BreakerState.CLOSED
    assert inner.calls == 4


async def test_a_failed_probe_opens_the_breaker_again():
    clock = Clock()
    settings = RetrySettings(deadline=0.001, breaker_threshold=1, breaker_cooldown=10)
    inner = Scripted(ProviderUnavailableError("down"), ProviderUnavailableError("still down"))
    provider = guarded(inner, settings, clock=clock)
    with pytest.raises(ProviderUnavailableError):
        await provider.add_txt(ZONE, NAME, "v", 60)
    clock.now += 10
    with pytest.raises(ProviderUnavailableError, match="still down"):
        await provider.add_txt(ZONE, NAME, "v", 60)
    assert provider.breaker.state is BreakerState.OPEN
    assert provider.breaker.retry_after() == 10


async def test_only_one_probe_goes_through_a_half_open_breaker():
    clock = Clock()
    settings = RetrySettings(deadline=1, breaker_threshold=1, breaker_cooldown=10)
    inner = Scripted(ProviderUnavailableError("down"), "hang")
    provider = guarded(inner, settings.model_copy(update={"attempt_timeout": 0.2}), clock=clock)
    with pytest.raises(ProviderUnavailableError):
        await provider.add_txt(ZONE, NAME, "v", 60)
    clock.now += 10
    probe = asyncio.create_task(provider.add_txt(ZONE, NAME, "v", 60))
    await asyncio.sleep(0.01)
    with pytest.raises(CircuitOpenError):
        await provider.add_txt(ZONE, NAME, "v", 60)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert inner.calls == 2


def test_fault_rates_cannot_add_up_to_more_than_one():
    with pytest.raises(ValidationError, match="more than 1"):
        FaultSettings(error_rate=0.6, hang_rate=0.5)


@pytest.mark.parametrize(
    ("fault", "error"),
    [("error_rate", ProviderUnavailableError), ("throttle_rate", ProviderThrottledError)],
)
async def test_injected_failures_make_no_change(fault, error):
    embedded = EmbeddedProvider("e", EmbeddedSettings())
    faulty = FaultyProvider(embedded, FaultSettings(**{fault: 1.0}))
    with pytest.raises(error):
        await faulty.add_txt(ZONE, NAME, "v", 60)
    assert await embedded.list_txt(ZONE, NAME) == []


async def test_a_lost_answer_makes_the_change_and_fails():
    embedded = EmbeddedProvider("e", EmbeddedSettings())
    faulty = FaultyProvider(embedded, FaultSettings(lost_answer_rate=1.0))
    with pytest.raises(ProviderUnavailableError, match="answer was lost"):
        await faulty.add_txt(ZONE, NAME, "v", 60)
    assert await embedded.list_txt(ZONE, NAME) == ["v"]
    assert faulty.injected == {"lost_answer": 1}


async def test_faults_at_a_rate_follow_their_seed():
    settings = FaultSettings(error_rate=0.3, slow_rate=0.2, slow_seconds=0.001, seed=7)
    runs = []
    for _ in range(2):
        faulty = FaultyProvider(EmbeddedProvider("e", EmbeddedSettings()), settings)
        outcomes = []
        for index in range(200):
            try:
                await faulty.add_txt(ZONE, NAME, f"v{index}", 60)
                outcomes.append(True)
            except ProviderUnavailableError:
                outcomes.append(False)
        runs.append(outcomes)
        assert 30 <= faulty.injected["error"] <= 90
        assert 15 <= faulty.injected["slow"] <= 70
    assert runs[0] == runs[1]


async def test_retries_carry_calls_through_injected_faults():
    embedded = EmbeddedProvider("e", EmbeddedSettings())
    faults = FaultSettings(error_rate=0.3, throttle_rate=0.2, hang_rate=0.05, seed=1)
    settings = FAST.model_copy(update={"deadline": 5, "breaker_threshold": 1000})
    provider = guarded(FaultyProvider(embedded, faults), settings)
    for index in range(100):
        await provider.add_txt(ZONE, NAME, f"v{index}", 60)
    assert len(await embedded.list_txt(ZONE, NAME)) == 100
    assert provider.backend is embedded
