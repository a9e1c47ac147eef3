"""UDP and TCP listeners answering from the embedded zones."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence
from typing import cast

import dns.rcode

from broker.dnsserver.responder import RCODE_SLOTS, Responder
from providers.embedded import ZoneSet

logger = logging.getLogger(__name__)

PORT_ATTEMPTS = 10
MIN_UDP_PAYLOAD = 512
REPORTED_RCODES = (
    dns.rcode.NOERROR,
    dns.rcode.FORMERR,
    dns.rcode.SERVFAIL,
    dns.rcode.NXDOMAIN,
    dns.rcode.NOTIMP,
    dns.rcode.REFUSED,
    dns.rcode.BADVERS,
)


class DnsServer:
    """An authoritative server for ``zones`` on every (host, port) of ``listen``."""

    def __init__(
        self,
        zones: ZoneSet,
        listen: Sequence[tuple[str, int]],
        *,
        max_udp_payload: int = 1232,
        tcp_idle_timeout: float = 10.0,
        max_tcp_connections: int = 256,
        answer_cache_size: int = 10000,
    ) -> None:
        _validate(max_udp_payload, tcp_idle_timeout, max_tcp_connections, answer_cache_size)
        self._listen = list(listen)
        self._responder = Responder(zones, max_udp_payload, answer_cache_size)
        zones.subscribe(self._responder.clear)
        self._tcp_idle_timeout = tcp_idle_timeout
        self._max_tcp_connections = max_tcp_connections
        self._counts = {"udp": [0] * RCODE_SLOTS, "tcp": [0] * RCODE_SLOTS}
        self._udp: list[_UdpProtocol] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[_TcpConnection] = set()
        self._addresses: list[tuple[str, int]] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self._addresses)

    def query_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for transport, slots in self._counts.items():
            for rcode, count in enumerate(slots):
                if count or rcode in REPORTED_RCODES:
                    counts[transport, dns.rcode.Rcode.make(rcode).name] = count
        return counts

    async def start(self) -> None:
        if self._udp or self._tcp:
            raise RuntimeError("DnsServer.start() called on a running server")
        try:
            for host, port in self._listen:
                await self._bind(host, port)
        except BaseException:
            await self.stop()
            raise
        logger.info("DNS server listening on %s", ", ".join(map(_format, self._addresses)))

    async def _bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            _, udp = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._responder, self._counts["udp"]),
                local_addr=(host, port),
            )
            bound_host, bound_port = udp.sockname()
            try:
                tcp = await loop.create_server(
                    self._accept, host=bound_host, port=bound_port, reuse_address=True
                )
            except OSError as exc:
                await udp.close()
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt == PORT_ATTEMPTS:
                    raise
                continue
            self._udp.append(udp)
            self._tcp.append(tcp)
            self._addresses.append((bound_host, bound_port))
            return

    def _accept(self) -> _TcpConnection:
        return _TcpConnection(
            self._responder,
            self._counts["tcp"],
            self._connections,
            self._max_tcp_connections,
            self._tcp_idle_timeout,
        )

    async def stop(self) -> None:
        if not (self._udp or self._tcp or self._connections):
            return
        udp, tcp, self._udp, self._tcp = self._udp, self._tcp, [], []
        for server in tcp:
            server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close(abort=True)
        await asyncio.gather(
            *(protocol.close() for protocol in udp),
            *(server.wait_closed() for server in tcp),
            *(connection.closed for connection in connections),
        )
        self._addresses = []
        logger.info("DNS server stopped")


def _validate(
    max_udp_payload: int, tcp_idle_timeout: float, max_connections: int, cache_size: int
) -> None:
    problems = []
    if not MIN_UDP_PAYLOAD <= max_udp_payload <= 65535:
        problems.append(f"max_udp_payload={max_udp_payload} must be within 512..65535")
    if tcp_idle_timeout <= 0:
        problems.append(f"tcp_idle_timeout={tcp_idle_timeout} must be positive")
    if max_connections < 1:
        problems.append(f"max_tcp_connections={max_connections} must be at least 1")
    if cache_size < 1:
        problems.append(f"answer_cache_size={cache_size} must be at least 1")
    if problems:
        raise ValueError("DnsServer: " + "; ".join(problems))


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder, counts: list[int]) -> None:
        self._respond = responder.respond
        self._fail = responder.fail
        self._counts = counts
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = asyncio.get_running_loop().create_future()
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def sockname(self) -> tuple[str, int]:
        assert self._transport is not None
        address = self._transport.get_extra_info("sockname")
        return str(address[0]), int(address[1])

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            response = self._respond(data, self._counts, True)
        except Exception:
            logger.exception("internal error answering a UDP query from %s", addr[0])
            response = self._fail(data, self._counts)
        if response is not None and not self._paused and self._transport is not None:
            self._transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP socket error: %s", exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self._closed


class _TcpConnection(asyncio.Protocol):
    """One client connection: 2-byte length-prefixed queries, answered in order."""

    def __init__(
        self,
        responder: Responder,
        counts: list[int],
        registry: set[_TcpConnection],
        limit: int,
        idle_timeout: float,
    ) -> None:
        self._respond = responder.respond
        self._fail = responder.fail
        self._counts = counts
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
            response = self._respond(query, self._counts, False)
        except Exception:
            logger.exception("internal error answering a TCP query")
            response = self._fail(query, self._counts)
        if response is not None and self._transport is not None:
            self._transport.write(len(response).to_bytes(2) + response)

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
