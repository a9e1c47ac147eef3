"""Constants and a query client shared by the DNS server tests."""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.message

ZONE = "example.test."
CHALLENGE = "_acme-challenge.www.example.test."
TIMEOUT = 2.0


class Client:
    """Queries one server over UDP and TCP, with dnspython or as raw bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def udp(self, query: dns.message.Message) -> dns.message.Message:
        return await dns.asyncquery.udp(query, self.host, port=self.port, timeout=TIMEOUT)

    async def tcp(self, query: dns.message.Message) -> dns.message.Message:
        return await dns.asyncquery.tcp(query, self.host, port=self.port, timeout=TIMEOUT)

    async def ask(
        self, name: str, rdtype: str, *, use_edns: int | None = None
    ) -> dns.message.Message:
        return await self.udp(dns.message.make_query(name, rdtype, use_edns=use_edns))

    async def raw_udp(self, packet: bytes, wait: float = 0.3) -> bytes | None:
        """The server's reply to ``packet``, or None when it stays silent for ``wait`` s."""
        replies = await self.raw_udp_many([packet], wait, expected=1)
        return replies[0] if replies else None

    async def raw_udp_many(
        self, packets: list[bytes], wait: float, expected: int | None = None
    ) -> list[bytes]:
        """Replies to ``packets`` (sent from one socket) until ``wait`` s of silence or
        ``expected`` replies."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        replies: list[bytes] = []
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for packet in packets:
                await loop.sock_sendto(sock, packet, (self.host, self.port))
            while expected is None or len(replies) < expected:
                try:
                    reply, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), wait)
                except TimeoutError:
                    return replies
                replies.append(reply)
        return replies
