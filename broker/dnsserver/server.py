"""UDP and TCP listeners answering from the embedded zones."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Sequence
from typing import Protocol

import dns.rcode
import dns.tsig
import dns.update

from broker.dnsserver.ratelimit import RateLimit, RateLimiter
from broker.dnsserver.responder import Responder
from broker.dnsserver.signed import SignedMessages
from broker.dnsserver.tcp import TcpConnection
from broker.dnsserver.udp import UdpListener, bind_udp
from broker.dnsserver.updates import Dispatcher, SignedDispatcher
from providers.embedded import EmbeddedZone, ZoneSet

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


class Signers(Protocol):
    """Where TSIG keys come from and UPDATEs go (the broker's tokens and service)."""

    fudge: float

    async def key(self, name: str) -> dns.tsig.Key | None: ...

    async def apply(
        self, message: dns.update.UpdateMessage, key_name: str, source: str
    ) -> dns.rcode.Rcode: ...

    def report(self, outcome: str) -> None: ...

    def refused(self, source: str, key_name: str, why: str) -> None:
        """An UPDATE refused before it was verified (for the audit log)."""


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
        signers: Signers | None = None,
        max_signed_in_flight: int = 64,
        apex_zones: Sequence[EmbeddedZone] = (),
        rate_limit: RateLimit | None = None,
        forward: Dispatcher | None = None,
    ) -> None:
        """``signers`` finds TSIG keys and applies UPDATEs (without, a signed message is
        FORMERR and an UPDATE NOTIMP); ``apex_zones`` are zones this server is not
        authoritative for but answers SOA and NS at the apex of (so RFC 2136 clients that
        look for the primary by SOA find this server); ``rate_limit`` limits responses
        over UDP per source network (None: no limit; the broker's config turns it on);
        ``forward`` takes the UPDATEs and signed messages instead of ``signers`` (a DNS
        worker process hands them to the main process)."""
        _validate(max_udp_payload, tcp_idle_timeout, max_tcp_connections, answer_cache_size)
        self._listen = list(listen)
        self._responder = Responder(
            zones,
            max_udp_payload,
            answer_cache_size,
            apex={z.origin: z for z in apex_zones},
            signed_elsewhere=signers is not None or forward is not None,
        )
        zones.subscribe(self._responder.clear)
        self._signed: Dispatcher | None = forward
        if signers is not None:
            self._signed = signed_dispatcher(
                signers, self._responder, max_udp_payload, max_signed_in_flight
            )
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._tcp_idle_timeout = tcp_idle_timeout
        self._max_tcp_connections = max_tcp_connections
        self._udp: list[UdpListener] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[TcpConnection] = set()
        self._addresses: list[tuple[str, int]] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self._addresses)

    def query_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        responder = self._responder
        for transport, slots in (("udp", responder.udp_counts), ("tcp", responder.tcp_counts)):
            for rcode, count in enumerate(slots):
                if count or rcode in REPORTED_RCODES:
                    counts[transport, dns.rcode.Rcode.make(rcode).name] = count
        return counts

    def rate_limited_counts(self) -> dict[str, int]:
        """UDP responses withheld by the rate limit: ``dropped`` and ``slipped`` (sent as
        a bare truncated answer instead)."""
        limiter = self._limiter
        if limiter is None:
            return {"dropped": 0, "slipped": 0}
        return {"dropped": limiter.dropped, "slipped": limiter.slipped}

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

    async def adopt(self, sockets: Sequence[tuple[socket.socket, socket.socket]]) -> None:
        """Also serve on bound (UDP, listening TCP) socket pairs made elsewhere: a DNS
        worker's share of SO_REUSEPORT listeners."""
        loop = asyncio.get_running_loop()
        for udp_sock, tcp_sock in sockets:
            udp_sock.setblocking(False)
            tcp_sock.setblocking(False)
            udp = UdpListener(udp_sock, self._responder, self._signed, self._limiter)
            self._udp.append(udp)
            self._tcp.append(await loop.create_server(self._accept, sock=tcp_sock))
            await udp.start()
            self._addresses.append(udp.sockname())

    async def _bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            udp = UdpListener(
                await bind_udp(host, port), self._responder, self._signed, self._limiter
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
            await udp.start()
            self._addresses.append((bound_host, bound_port))
            return

    def _accept(self) -> TcpConnection:
        return TcpConnection(
            self._responder,
            self._connections,
            self._max_tcp_connections,
            self._tcp_idle_timeout,
            self._signed,
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
            *(listener.close() for listener in udp),
            *(server.wait_closed() for server in tcp),
            *(connection.closed for connection in connections),
        )
        if self._signed is not None:
            await self._signed.close()
        self._addresses = []
        logger.info("DNS server stopped")


def signed_dispatcher(
    signers: Signers, responder: Responder, max_udp_payload: int, limit: int
) -> SignedDispatcher:
    """Answers signed messages and UPDATEs with ``signers``, at most ``limit`` at once."""
    handler = SignedMessages(
        signers.key,
        signers.apply,
        responder.answer,
        fudge=signers.fudge,
        report=signers.report,
        refused=signers.refused,
        max_udp_payload=max_udp_payload,
    )
    return SignedDispatcher(handler, limit)


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
