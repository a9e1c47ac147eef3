from __future__ import annotations

import asyncio

import pytest

from broker.propagation.cache import MAX_TTL, MIN_TTL, Coalescer, TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_live_for_their_ttl_within_bounds() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(10, clock)
    cache.put("short", 1, 0)
    cache.put("ttl", 2, 30)
    cache.put("long", 3, 10**9)
    clock.now += MIN_TTL - 0.01
    assert cache.get("short") == (True, 1)
    clock.now += 0.02
    assert cache.get("short") == (False, None)
    clock.now += 29
    assert cache.get("ttl") == (False, None)
    clock.now += MAX_TTL - 31
    assert cache.get("long") == (True, 3)
    clock.now += 1
    assert cache.get("long") == (False, None)


def test_least_recently_used_entries_go_when_full() -> None:
    cache: TtlCache[str, int] = TtlCache(2)
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == (True, 1)
    cache.put("c", 3, 60)
    assert cache.get("b") == (False, None)
    assert len(cache) == 2


async def test_concurrent_callers_share_one_run() -> None:
    coalescer: Coalescer[str, int] = Coalescer()
    release = asyncio.Event()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return 42

    callers = [asyncio.create_task(coalescer.run("key", work)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*callers) == [42] * 10
    assert runs == 1
    assert await coalescer.run("key", work) == 42
    assert runs == 2


async def test_a_cancelled_caller_leaves_the_run_to_the_others() -> None:
    coalescer: Coalescer[str, int] = Coalescer()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    first = asyncio.create_task(coalescer.run("key", work))
    second = asyncio.create_task(coalescer.run("key", work))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second == 7
    assert first.cancelled()


async def test_close_cancels_runs_in_flight_and_refuses_new_ones() -> None:
    coalescer: Coalescer[str, int] = Coalescer()

    async def forever() -> int:
        await asyncio.Event().wait()
        return 0

    caller = asyncio.create_task(coalescer.run("key", forever))
    await asyncio.sleep(0)
    await coalescer.close()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(RuntimeError, match="closed"):
        await coalescer.run("other", forever)
