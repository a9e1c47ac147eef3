"""UPDATE messages (RFC 2136) are answered by a handler outside the DNS wire code,
asynchronously: each one runs as a task this dispatcher owns, at most ``limit`` at once
(beyond that the server answers REFUSED at once), and answers when it is done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import dns.rcode

from broker.dnsserver.wire import header_only

logger = logging.getLogger(__name__)

UPDATE_OPCODE_BITS = 0x28
"""Byte 2 of a header, masked with 0x78, for opcode UPDATE (5)."""

UpdateHandler = Callable[[bytes, str], Awaitable[bytes | None]]
Reply = Callable[[bytes], None]


def is_update(data: bytes) -> bool:
    return len(data) > 2 and data[2] & 0xF8 == UPDATE_OPCODE_BITS


class UpdateDispatcher:
    def __init__(self, handler: UpdateHandler, limit: int) -> None:
        self._handler = handler
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, data: bytes, source: str, reply: Reply) -> None:
        if len(data) < 12:
            return
        if len(self._tasks) >= self._limit:
            reply(header_only(data, dns.rcode.REFUSED))
            return
        task = asyncio.get_running_loop().create_task(self._run(data, source, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, data: bytes, source: str, reply: Reply) -> None:
        try:
            response = await self._handler(data, source)
        except Exception:
            logger.exception("internal error answering an update from %s", source)
            response = header_only(data, dns.rcode.SERVFAIL)
        if response is not None:
            reply(response)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
