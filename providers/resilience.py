"""Retries and a circuit breaker around a provider's writes.

A write that fails in a way worth repeating (throttled, unavailable, no answer within
``attempt_timeout``) is tried again after a jittered, doubling pause, for as long as the
``deadline`` of the whole call allows; a refusal (bad credentials, a rejected change) is
never repeated. Every call therefore ends within its deadline, in success or in the last
error, marked retryable or not.

The breaker counts consecutive failed attempts of one provider instance. At
``breaker_threshold`` it opens: calls fail at once (the provider is given a rest instead
of a queue of doomed calls) until ``breaker_cooldown`` has passed; then one call is let
through as a probe, and its outcome closes or re-opens the breaker.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from broker.values import Duration
from providers.base import (
    Change,
    DnsProvider,
    ProviderError,
    ProviderUnavailableError,
    ProviderWrapper,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt_timeout: Duration = Field(20.0, le=300)
    """A single try that has not answered by then is abandoned (and may be retried)."""
    deadline: Duration = Field(30.0, le=600)
    """The whole call, retries included, ends by then."""
    backoff: Duration = Field(0.2, le=60)
    """First pause between tries; doubled each time (with jitter), at most max_backoff."""
    max_backoff: Duration = Field(5.0, le=300)
    breaker_threshold: int = Field(5, ge=1, le=1000)
    """Consecutive failed tries that open the circuit breaker."""
    breaker_cooldown: Duration = Field(30.0, le=3600)
    """How long an open breaker refuses calls before letting one probe through."""


class BreakerState(enum.IntEnum):
    """Values of the circuit-state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def admit(self) -> bool:
        """Whether a try may go ahead now (taking the probe's turn when half open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def failed(self) -> bool:
        """Count a failed try; True when this opened (or re-opened) the breaker."""
        self.failures += 1
        if self._probing or (self._opened_at is None and self.failures >= self.threshold):
            self._opened_at = self._clock()
            self._probing = False
            return True
        return False

    def abandoned(self) -> None:
        """A try that was let through ended without an outcome (its caller went away)."""
        self._probing = False


class CircuitOpenError(ProviderUnavailableError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ResilientProvider(ProviderWrapper):
    """Delegates to ``inner``; add_txt, remove_txt and list_txt are retried and guarded."""

    def __init__(
        self,
        inner: DnsProvider,
        settings: RetrySettings,
        *,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.settings = settings
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown, clock=clock
        )
        self._on_retry = on_retry
        self._sleep = sleep

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        return await self._guarded("add", lambda: self.inner.add_txt(zone, name, value, ttl))

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return await self._guarded("remove", lambda: self.inner.remove_txt(zone, name, value))

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return await self._guarded("list", lambda: self.inner.list_txt(zone, name))

    async def _guarded(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.deadline
        delay = s.backoff
        attempt = 0
        while True:
            if not self.breaker.admit():
                wait = max(1.0, self.breaker.retry_after())
                raise CircuitOpenError(
                    f"provider {self.name!r} is failing (circuit breaker open after "
                    f"{self.breaker.failures} failed tries); retry in {wait:.0f} s",
                    retry_after=wait,
                )
            attempt += 1
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(min(s.attempt_timeout, remaining)):
                    result = await call()
            except TimeoutError:
                error: ProviderError = ProviderUnavailableError(
                    f"provider {self.name!r} did not answer {operation} within "
                    f"{min(s.attempt_timeout, remaining):g} s"
                )
            except ProviderError as exc:
                if not exc.retryable:
                    self.breaker.succeeded()  # it answered: the provider itself is up
                    raise
                error = exc
            except BaseException:
                self.breaker.abandoned()
                raise
            else:
                self.breaker.succeeded()
                return result
            if self.breaker.failed():
                log.warning(
                    "provider %s: circuit breaker open for %.0f s after %d failed tries (%s)",
                    self.name, s.breaker_cooldown, self.breaker.failures, error,
                )  # fmt: skip
            pause = random.uniform(delay / 2, delay)  # noqa: S311 - jitter
            if loop.time() + pause >= deadline:
                if attempt == 1:
                    raise error
                raise ProviderUnavailableError(f"{error} (after {attempt} tries)") from error
            if self._on_retry is not None:
                self._on_retry(operation)
            log.info(
                "provider %s: %s failed (%s), try %d again in %.2f s",
                self.name, operation, error, attempt + 1, pause,
            )  # fmt: skip
            await self._sleep(pause)
            delay = min(delay * 2, s.max_backoff)
