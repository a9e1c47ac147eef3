"""The HTTP server under the application: aiohttp's, with a deadline for request heads.

aiohttp bounds an idle keep-alive connection (``keepalive_timeout``) but has no
request-header timeout: a client that sends one byte of a head every few seconds
(slowloris) holds its connection, and a few thousand such clients hold every file
descriptor. Here a connection must deliver a complete head within ``header_timeout``
of opening, and each later head within ``header_timeout`` of its first byte, or it is
closed. The body has its own deadline in broker/api/limits.py.

The check reads three attributes of aiohttp's RequestHandler (``_waiter``, set while it
waits for a head; ``_request_count``, counting parsed heads; ``_messages``): aiohttp
offers no public hook at that level. tests/broker/api/test_slow_clients.py fails if
they change meaning.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's RequestHandler, closing a connection whose head is late."""

    __slots__ = ("_head_deadline", "_header_timeout", "_heads_seen")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self._heads_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._idle() and (
            self._head_deadline is None or self._heads_seen != self._request_count
        ):
            self._disarm()
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """Waiting for the next head, none queued: bytes now start a new head."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm(self) -> None:
        self._heads_seen = self._request_count
        self._head_deadline = self._loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expire(self) -> None:
        self._head_deadline = None
        if self._request_count == self._heads_seen and self._idle():
            log.info(
                "closed a connection whose request head took over %gs peer=%s",
                self._header_timeout,
                self.peername,
            )
            self.force_close()


class HeadDeadlineServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeadDeadlineHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are HeadDeadlineHandlers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return HeadDeadlineServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            header_timeout=self._header_timeout,
            **plain._kwargs,
        )
