"""Signed messages and UPDATEs are answered asynchronously (broker.dnsserver.signed):
each one runs as a task this dispatcher owns, at most ``limit`` at once (beyond that the
server answers REFUSED at once), and answers when it is done. ``udp`` tells the handler
to keep its answer within the UDP size limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import dns.rcode

from broker.dnsserver.wire import header_only

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, str, bool], Awaitable[bytes | None]]
Reply = Callable[[bytes], None]


class Dispatcher(Protocol):
    """Where the listeners hand the messages the responder does not answer itself."""

    def dispatch(self, data: bytes, source: str, reply: Reply, *, udp: bool = False) -> None: ...

    async def close(self) -> None: ...


class SignedDispatcher:
    def __init__(self, handler: Handler, limit: int) -> None:
        self._handler = handler
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, data: bytes, source: str, reply: Reply, *, udp: bool = False) -> None:
        if len(self._tasks) >= self._limit:
            reply(header_only(data, dns.rcode.REFUSED))
            return
        task = asyncio.get_running_loop().create_task(self._run(data, source, reply, udp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, data: bytes, source: str, reply: Reply, udp: bool) -> None:
        try:
            response = await self._handler(data, source, udp)
        except Exception:
            logger.exception("internal error answering a signed message from %s", source)
            response = header_only(data, dns.rcode.SERVFAIL)
        if response is not None:
            reply(response)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
