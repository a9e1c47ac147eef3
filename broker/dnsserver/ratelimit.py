"""Response-rate limiting over UDP (the idea of BIND's RRL), against reflection attacks.

A UDP source address can be forged, so a server answering every datagram lends its
bandwidth to whoever names a victim as the source. Each source network (IPv4 /24 and
IPv6 /56 by default) holds a token bucket that refills at ``responses_per_second`` up to
``burst``; a query finding it empty gets no answer, except every ``slip``-th, which gets
a minimal truncated one (TC=1, no records) so a real resolver behind that network
retries over TCP, which cannot be forged and is not limited.

Unlike BIND, buckets are kept per network only (not per network and answer): the
embedded zones hold a handful of names, so the answer adds little to tell floods apart.
The table holds at most ``max_sources`` networks: when full, networks whose bucket has
refilled (idle for ``burst / responses_per_second`` s, the same as never seen) are
forgotten, and if that frees too little, the oldest quarter, so forged sources cannot
grow it without bound.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

# What ``RateLimiter.check`` says about a datagram: plain ints, not an enum, because an
# enum member costs an attribute lookup per datagram (about 60 ns on CPython 3.11).
ANSWER: Final = 0
DROP: Final = 1
SLIP: Final = 2


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What ``DnsServer(rate_limit=)`` enforces (broker.config's ``[dns.rate_limit]``)."""

    responses_per_second: float = 1000.0
    burst: float = 200.0
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    max_sources: int = 65536

    def __post_init__(self) -> None:
        problems = []
        if self.responses_per_second <= 0:
            problems.append(f"responses_per_second={self.responses_per_second} must be positive")
        if self.burst < 1:
            problems.append(f"burst={self.burst} must be at least 1")
        if self.slip < 0:
            problems.append(f"slip={self.slip} must be 0 (never) or more")
        if not 0 <= self.ipv4_prefix <= 32:
            problems.append(f"ipv4_prefix={self.ipv4_prefix} must be within 0..32")
        if not 0 <= self.ipv6_prefix <= 128:
            problems.append(f"ipv6_prefix={self.ipv6_prefix} must be within 0..128")
        if self.max_sources < 1:
            problems.append(f"max_sources={self.max_sources} must be at least 1")
        if problems:
            raise ValueError("RateLimit: " + "; ".join(problems))


class RateLimiter:
    """Token buckets by source network; ``dropped`` and ``slipped`` count what it limited.

    A bucket is a small mutable list ``[tokens, last refill time, responses limited]``
    because ``check`` runs once per UDP datagram. Its hot path is one dict lookup: each
    source address seen maps straight to its network's bucket (a cache, itself capped at
    ``max_sources`` addresses and emptied whenever buckets are forgotten).
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._rate = limit.responses_per_second
        self._burst = limit.burst
        self._slip = limit.slip
        self._v4_shift = 32 - limit.ipv4_prefix
        self._v6_shift = 128 - limit.ipv6_prefix
        self._buckets: dict[int, list[float]] = {}
        self._by_host: dict[str, list[float]] = {}
        self.dropped = 0
        self.slipped = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, host: str, now: float) -> int:
        """ANSWER, DROP or SLIP (answer with a bare truncated reply) for a datagram from
        ``host`` (an address as the socket gives it) arriving at ``now`` (monotonic s)."""
        bucket = self._by_host.get(host)
        if bucket is None:
            bucket = self._bucket(host, now)
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = (tokens if tokens < self._burst else self._burst) - 1
            return ANSWER
        bucket[0] = tokens
        bucket[2] += 1
        if self._slip and bucket[2] % self._slip == 0:
            self.slipped += 1
            return SLIP
        self.dropped += 1
        return DROP

    def _bucket(self, host: str, now: float) -> list[float]:
        """The bucket of ``host``'s network, made full if the network is new."""
        key = self.network(host)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.limit.max_sources:
                self._evict(now)
            bucket = self._buckets[key] = [self._burst, now, 0]
        if len(self._by_host) >= self.limit.max_sources:
            self._by_host.clear()
        self._by_host[host] = bucket
        return bucket

    def network(self, host: str) -> int:
        """The source network as an integer: IPv4 networks are non-negative, IPv6 ones
        negative, so the two families never share a key."""
        if ":" not in host:
            return int.from_bytes(socket.inet_aton(host)) >> self._v4_shift
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        if packed[:12] == b"\0" * 10 + b"\xff\xff":
            return int.from_bytes(packed[12:]) >> self._v4_shift
        return -1 - (int.from_bytes(packed) >> self._v6_shift)

    def _evict(self, now: float) -> None:
        """Forget refilled buckets; if fewer than a quarter go, also the oldest quarter."""
        refilled = now - self._burst / self._rate
        stale = [key for key, bucket in self._buckets.items() if bucket[1] <= refilled]
        if len(stale) < len(self._buckets) // 4:
            oldest = list(self._buckets)[: max(1, len(self._buckets) // 4)]
            stale = list({*stale, *oldest})
        for key in stale:
            del self._buckets[key]
        self._by_host.clear()
