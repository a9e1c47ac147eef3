"""A bounded TTL cache for discovery, and the in-flight table that coalesces queries."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MIN_TTL = 1.0
MAX_TTL = 3600.0


class TtlCache(Generic[K, V]):
    """Least-recently-used entries beyond ``max_entries`` go first; each entry lives for
    its TTL clamped to [``MIN_TTL``, ``MAX_TTL``] seconds."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(found, value); an expired entry is not found."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, ttl: float) -> None:
        lifetime = min(max(ttl, MIN_TTL), MAX_TTL)
        self._entries[key] = (self._clock() + lifetime, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class Coalescer(Generic[K, V]):
    """At most one task in flight per key; every caller asking meanwhile shares its result.

    The tasks belong to the coalescer: a caller that is cancelled leaves the task to the
    others, and ``close()`` cancels and awaits whatever is still running. The functions
    given to ``run`` report failures in their result; an exception reaches every caller.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._closed = False
        self.started = 0

    async def run(self, key: K, start: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            if self._closed:
                raise RuntimeError("the propagation checker is closed")
            task = asyncio.get_running_loop().create_task(start())
            self._inflight[key] = task
            self.started += 1
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that still wait got it

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
