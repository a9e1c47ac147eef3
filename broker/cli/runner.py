"""Running a command's coroutine, and what every command shares: exit codes, the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from broker.config import Settings
from broker.runtime import open_store
from broker.store import Store

T = TypeVar("T")
EXIT_CONFIG = 2
EXIT_FAILED = 1

Command = Callable[[argparse.Namespace, Settings], int]


def run(coro_factory: Callable[[], Awaitable[int]]) -> int:
    """Run on uvloop where it is installed, else on the default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_as_coroutine(coro_factory))


async def _as_coroutine(factory: Callable[[], Awaitable[int]]) -> int:
    return await factory()


def run_value(awaitable: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await awaitable

    with asyncio.Runner() as runner:
        return runner.run(wrap())


def with_store(settings: Settings, action: Callable[[Store], Awaitable[int]]) -> int:
    """Run ``action`` on the configured store, opened (and migrated) first."""

    async def go() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return run(go)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED
