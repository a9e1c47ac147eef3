"""Concurrent TXT edits to one zone, applied as one backend change per batch.

A zone has at most one change in flight. Edits that arrive meanwhile (or in the same
event-loop turn) wait and go out together as the next change, so ten concurrent
presents on one name become one read-modify-write of that RRset, and writes to one
RRset are serialized. A refused batch touching several names is retried name by name,
so one bad name does not fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from providers.base import (
    Change,
    DnsProvider,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TxtEdit:
    """Add ``value`` at ``name`` with ``ttl``, or remove it when ``ttl`` is None."""

    name: str
    value: str
    ttl: int | None = None

    @property
    def adds(self) -> bool:
        return self.ttl is not None


def merge_values(current: Sequence[str], edits: Iterable[TxtEdit]) -> list[str]:
    """``current`` after ``edits`` in order: adding keeps the others, removing drops one."""
    values = list(current)
    for edit in edits:
        if edit.adds and edit.value not in values:
            values.append(edit.value)
        elif not edit.adds and edit.value in values:
            values.remove(edit.value)
    return values


def by_name(edits: Iterable[TxtEdit]) -> dict[str, list[TxtEdit]]:
    grouped: dict[str, list[TxtEdit]] = {}
    for edit in edits:
        grouped.setdefault(edit.name, []).append(edit)
    return grouped


def last_ttl(edits: Iterable[TxtEdit]) -> int | None:
    ttls = [edit.ttl for edit in edits if edit.ttl is not None]
    return ttls[-1] if ttls else None


ApplyBatch = Callable[[str, Sequence[TxtEdit]], Awaitable[Change | None]]
_Pending = tuple[TxtEdit, "asyncio.Future[Change | None]"]


class ChangeBatcher:
    """Queues edits per zone; ``apply(zone, edits)`` makes one backend change of them.

    A caller cancelled while waiting leaves its edit queued: it is applied anyway
    (the broker's reconciler owns undoing what nobody wanted).
    """

    def __init__(self, provider: str, apply: ApplyBatch) -> None:
        self._provider = provider
        self._apply = apply
        self._pending: dict[str, list[_Pending]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    async def submit(self, zone: str, edit: TxtEdit) -> Change | None:
        if self._closed:
            raise ProviderUnavailableError(f"provider {self._provider!r} is closed")
        future: asyncio.Future[Change | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(zone, []).append((edit, future))
        if zone not in self._workers:
            self._workers[zone] = asyncio.create_task(
                self._drain(zone), name=f"{self._provider} changes {zone}"
            )
        return await future

    async def close(self) -> None:
        """Refuse new edits; let the queued ones finish."""
        self._closed = True
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _drain(self, zone: str) -> None:
        try:
            while batch := self._pending.pop(zone, None):
                await self._run(zone, batch)
        finally:
            del self._workers[zone]

    async def _run(self, zone: str, batch: list[_Pending]) -> None:
        try:
            change = await self._apply(zone, [edit for edit, _ in batch])
        except ProviderRejectedError as exc:
            groups = by_name(edit for edit, _ in batch)
            if len(groups) == 1:
                _settle(batch, exc)
                return
            log.info(
                "provider %s: a change of %d names in %s was refused; retrying name by name",
                self._provider, len(groups), zone,
            )  # fmt: skip
            for name in groups:
                await self._run(zone, [item for item in batch if item[0].name == name])
        except ProviderError as exc:
            _settle(batch, exc)
        except Exception as exc:
            log.exception("provider %s: unexpected failure changing %s", self._provider, zone)
            _settle(batch, ProviderUnavailableError(f"unexpected {type(exc).__name__}: {exc}"))
        except BaseException:
            _settle(batch, ProviderUnavailableError(f"provider {self._provider!r} stopped"))
            raise
        else:
            _settle(batch, change)


def _settle(batch: list[_Pending], outcome: Change | ProviderError | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if isinstance(outcome, ProviderError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class SharedWaits:
    """One poll loop per change id, however many callers wait for it."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def wait(self, key: str, poll: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(poll(), name=f"wait for {key}")
            self._tasks[key] = task
            task.add_done_callback(self._forget(key))
        await asyncio.shield(task)

    def _forget(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone

        return forget

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class BatchedProvider(DnsProvider):
    """A provider whose edits go through a ChangeBatcher and whose changes apply later
    (polled once per change id, however many callers wait). Subclasses give ``_apply``
    (one backend change of a batch) and ``_poll_change`` (return once it is live)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._batcher = ChangeBatcher(name, self._apply)
        self._waits = SharedWaits()

    @abstractmethod
    async def _apply(self, zone: str, edits: Sequence[TxtEdit]) -> Change | None: ...

    @abstractmethod
    async def _poll_change(self, change_id: str) -> None: ...

    async def close(self) -> None:
        await self._batcher.close()
        await self._waits.close()

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        return await self._batcher.submit(zone, TxtEdit(name, value, ttl))

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        return await self._batcher.submit(zone, TxtEdit(name, value))

    async def wait_applied(self, change: Change | None) -> None:
        if change is not None:
            await self._waits.wait(change.id, lambda: self._poll_change(change.id))
