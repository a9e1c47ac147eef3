"""One SQLite writer thread that commits concurrent writes together.

Every write is a single SQL statement (so a failing one is rolled back by SQLite on its
own and the others in the transaction stand). Writes queued while a transaction runs go
into the next one: under load, one wake-up, one commit and one hand-back to the event
loop serve many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

Write = Callable[[sqlite3.Connection], Any]
_Item = tuple[Write, asyncio.Future[Any]]
_STOP = object()
MAX_BATCH = 256


class GroupCommitWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread.start()
        await self._started

    async def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    async def write(self, write: Write) -> Any:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((write, future))
        return await future

    def _serve(self) -> None:
        assert self._loop is not None
        assert self._started is not None
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._loop.call_soon_threadsafe(_fail_start, self._started, exc)
            return
        self._loop.call_soon_threadsafe(_succeed_start, self._started)
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    outcomes = self._commit(conn, batch)
                    self._loop.call_soon_threadsafe(_settle, outcomes)
                if stop:
                    return
        finally:
            conn.close()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[_Item] = [first]  # type: ignore[list-item]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Item]) -> list[tuple[Any, Any, Any]]:
        outcomes: list[tuple[Any, Any, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write, future in batch:
                try:
                    outcomes.append((future, write(conn), None))
                except sqlite3.Error as exc:
                    outcomes.append((future, None, exc))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return [(future, None, exc) for _, future in batch]
        return outcomes


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _succeed_start(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


def _fail_start(started: asyncio.Future[None], exc: BaseException) -> None:
    if not started.done():
        started.set_exception(exc)
