"""A fault-injecting wrapper around any provider, for drills and soak runs.

``[providers.NAME.faults]`` makes a configured fraction of calls fail the way real DNS
APIs fail: an error, throttling, a call that hangs, a slow answer, or a change that is
made and then reported as failed (the answer was lost). Everything above the provider
(retries, the circuit breaker, write-ahead intents) must then still end every request
in success or a clear retryable error, with no TXT value orphaned or lost.

Never meant for production traffic: the broker logs a warning at start when it is on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.values import Duration
from providers.base import (
    Change,
    DnsProvider,
    ProviderThrottledError,
    ProviderUnavailableError,
    ProviderWrapper,
)

T = TypeVar("T")
Rate = float


class FaultSettings(BaseModel):
    """Fractions of calls (0 to 1, summing to at most 1) that fail each way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: Rate = Field(0.0, ge=0, le=1)
    throttle_rate: Rate = Field(0.0, ge=0, le=1)
    hang_rate: Rate = Field(0.0, ge=0, le=1)
    """The call never answers (until the retry policy's attempt timeout cuts it)."""
    slow_rate: Rate = Field(0.0, ge=0, le=1)
    lost_answer_rate: Rate = Field(0.0, ge=0, le=1)
    """The change is made, then the call fails as if its answer was lost on the way."""
    slow_seconds: Duration = Field(1.0, le=60)
    seed: int | None = None
    """Fix the sequence of faults (for reproducible drills)."""

    @model_validator(mode="after")
    def _total(self) -> FaultSettings:
        if self.total > 1:
            raise ValueError("the fault rates add up to more than 1")
        return self

    @property
    def total(self) -> float:
        return (
            self.error_rate
            + self.throttle_rate
            + self.hang_rate
            + self.slow_rate
            + self.lost_answer_rate
        )


class FaultyProvider(ProviderWrapper):
    """Delegates to ``inner``, failing the configured fraction of add/remove/list calls."""

    def __init__(self, inner: DnsProvider, settings: FaultSettings) -> None:
        super().__init__(inner)
        self.capabilities = replace(inner.capabilities, can_fail=True)  # type: ignore[misc]
        self.settings = settings
        self._random = random.Random(settings.seed)  # noqa: S311 - not for secrets
        self.injected: dict[str, int] = {}

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        return await self._call(lambda: self.inner.add_txt(zone, name, value, ttl))

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return await self._call(lambda: self.inner.remove_txt(zone, name, value))

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return await self._call(lambda: self.inner.list_txt(zone, name))

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        s = self.settings
        roll = self._random.random()
        for fault, rate in (
            ("error", s.error_rate),
            ("throttle", s.throttle_rate),
            ("hang", s.hang_rate),
            ("slow", s.slow_rate),
            ("lost_answer", s.lost_answer_rate),
        ):
            if roll < rate:
                self.injected[fault] = self.injected.get(fault, 0) + 1
                return await self._inject(fault, call)
            roll -= rate
        return await call()

    async def _inject(self, fault: str, call: Callable[[], Awaitable[T]]) -> T:
        if fault == "error":
            raise ProviderUnavailableError(f"injected fault: provider {self.name!r} failed")
        if fault == "throttle":
            raise ProviderThrottledError(f"injected fault: provider {self.name!r} throttled")
        if fault == "hang":
            await asyncio.Event().wait()
        if fault == "slow":
            await asyncio.sleep(self.settings.slow_seconds)
            return await call()
        await call()
        raise ProviderUnavailableError(
            f"injected fault: provider {self.name!r} made the change, its answer was lost"
        )
