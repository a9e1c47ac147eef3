"""TCP: 2-byte length-prefixed queries (RFC 1035 4.2.2, RFC 7766), answered in order."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from broker.dnsserver.responder import SIGNED, Responder
from broker.dnsserver.updates import Dispatcher

logger = logging.getLogger(__name__)


class TcpConnection(asyncio.Protocol):
    """One client connection, registered in ``registry`` while open.

    Closed when the registry already holds ``limit`` connections, after ``idle_timeout``
    seconds without data, or by ``close()``. Reading pauses while the client does not
    read its responses, so an unread write buffer cannot grow without bound.
    """

    def __init__(
        self,
        responder: Responder,
        registry: set[TcpConnection],
        limit: int,
        idle_timeout: float,
        signed: Dispatcher | None = None,
    ) -> None:
        self._responder = responder
        self._signed = signed
        self._registry = registry
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._last_activity = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)
        if len(self._registry) > self._limit:
            logger.debug("TCP connection limit %d reached; closing a new one", self._limit)
            self._transport.abort()
            return
        self._idle_timer = self._loop.call_later(self._idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        remaining = self._last_activity + self._idle_timeout - self._loop.time()
        if remaining <= 0:
            self.close(abort=False)
        else:
            self._idle_timer = self._loop.call_later(remaining, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2:
            end = 2 + int.from_bytes(buffer[:2])
            if len(buffer) < end:
                return
            query = bytes(buffer[2:end])
            del buffer[:end]
            self._answer(query)

    def _answer(self, query: bytes) -> None:
        try:
            response = self._responder.respond(query, False)
        except Exception:
            logger.exception("internal error answering a TCP query")
            response = self._responder.fail(query, False)
        if response is SIGNED and self._signed is not None:
            self._signed.dispatch(query, self._peer(), self._send)
        elif response is not None:
            self._send(response)

    def _send(self, response: bytes) -> None:
        """Responses may leave out of order (RFC 7766 6.2.1.1): an update answers when done."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(len(response).to_bytes(2) + response)

    def _peer(self) -> str:
        peer = None if self._transport is None else self._transport.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self, *, abort: bool) -> None:
        """Close; unsent responses are dropped when ``abort`` or the client is not reading."""
        if self._transport is None:
            return
        if abort or self._transport.get_write_buffer_size():
            self._transport.abort()
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
