"""What one caller, or all of them, may ask of the HTTP API at once.

- Token buckets per source address (checked before anything else) and per token
  (charged by ``authenticate`` once the caller is known): a refusal is 429
  ``rate-limited`` with ``Retry-After``.
- At most ``max_in_flight`` requests handled at once; past that 503 ``overloaded`` with
  ``Retry-After`` at once, so a flood never queues without bound.
- The body is read here, within ``body_timeout`` and ``client_max_size``, for every face
  (native, acme-dns, httpreq): a body that dribbles in is refused with 408 and the
  connection closed, before a handler or the store sees the request. A body that came
  whole with the head (nearly every one) is left to the handler: no timer needed, and
  ``client_max_size`` still bounds it when read.

The buckets are hand-written rather than taken from the ``limits`` library: its memory
storage keeps every key until a background timer thread expires it and has no cap, while
here each table is an LRU of at most ``max_tracked`` buckets (a bucket pushed out comes
back full, which is what an idle one would be). IPv6 callers are counted per /64, the
block one subscriber usually holds, so walking through addresses does not reset a bucket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

from broker.api.middleware import Handler, problem_response
from broker.auth import IPAddress, IPNetwork, client_address
from broker.config import HttpSettings
from broker.errors import OverloadedError, RateLimitedError, RequestTimeoutError

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: refusing them would restart or blind a busy broker."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """``rate`` requests a second per key with bursts of ``burst``, for at most
    ``max_tracked`` keys (least recently used dropped first)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_tracked: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_tracked = max_tracked
        self._clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> float:
        """0 when ``key`` may go on (a token is spent), else the seconds until it may."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


def retry_after(seconds: float) -> int:
    """Retry-After in whole seconds, never 0 (RFC 9110 delay-seconds)."""
    return max(1, math.ceil(seconds))


class RequestLimits:
    """The limits of one application, shared by every request it handles."""

    def __init__(
        self,
        http: HttpSettings,
        trusted_proxies: Sequence[IPNetwork] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rates = http.rate_limit
        self.addresses = (
            TokenBuckets(rates.address_rate, rates.address_burst, rates.max_tracked, clock)
            if rates.address_rate > 0
            else None
        )
        self.tokens = (
            TokenBuckets(rates.token_rate, rates.token_burst, rates.max_tracked, clock)
            if rates.token_rate > 0
            else None
        )
        self.max_in_flight = http.max_in_flight
        self.body_timeout = http.body_timeout
        self.trusted_proxies = tuple(trusted_proxies)
        self.in_flight = 0

    def charge_address(self, request: web.Request) -> None:
        if self.addresses is None:
            return
        forwarded_for = request.headers.get("X-Forwarded-For")
        address = client_address(request.remote, forwarded_for, self.trusted_proxies)
        wait = self.addresses.take(_address_key(address))
        if wait:
            raise RateLimitedError(
                f"too many requests from {address}; retry after {retry_after(wait)} s",
                retry_after=retry_after(wait),
            )

    def charge_token(self, key: str) -> None:
        if self.tokens is None:
            return
        wait = self.tokens.take(key)
        if wait:
            raise RateLimitedError(
                f"too many requests with this token; retry after {retry_after(wait)} s",
                retry_after=retry_after(wait),
            )

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.max_in_flight:
            raise OverloadedError(
                f"{self.in_flight} requests are being handled, the most allowed; retry shortly",
                retry_after=1,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def _address_key(address: IPAddress | None) -> Hashable:
    if isinstance(address, ipaddress.IPv6Address):
        return ipaddress.IPv6Network((address, 64), strict=False)
    return address


LIMITS_KEY = web.AppKey("limits", RequestLimits)


def charge_token(request: web.Request, key: str) -> None:
    """Count one request against the token (or acme-dns account) ``key``; 429 past its
    bucket."""
    request.app[LIMITS_KEY].charge_token(key)


@web.middleware
async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in EXEMPT_PATHS:
        return await handler(request)
    limits = request.app[LIMITS_KEY]
    limits.charge_address(request)
    with limits.slot():
        if request.body_exists and not request.content.is_eof():
            try:
                async with asyncio.timeout(limits.body_timeout):
                    await request.read()
            except TimeoutError:
                return await _refuse_slow_body(request, limits.body_timeout)
        return await handler(request)


async def _refuse_slow_body(request: web.Request, waited: float) -> web.StreamResponse:
    """408, sent now, then the connection closed: what is left of the body is not read
    (aiohttp would otherwise linger reading it)."""
    error = RequestTimeoutError(
        f"the body did not arrive within {waited:g} s; send it at once after the headers"
    )
    response = problem_response(error)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.protocol is not None:
        request.protocol.force_close()
    return response
