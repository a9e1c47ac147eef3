from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dns.message
import dns.rcode

from broker.dnsserver import DnsServer
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import TIMEOUT, ZONE, Client

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connect(host: str, port: int) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


def frame(query: dns.message.Message) -> bytes:
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


async def read_response(reader: asyncio.StreamReader) -> dns.message.Message:
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(length), TIMEOUT))


async def closed_by_server(reader: asyncio.StreamReader, within: float = TIMEOUT) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True


async def test_several_pipelined_queries_on_one_connection_are_all_answered(
    client: Client,
) -> None:
    queries = [
        dns.message.make_query(ZONE, "SOA"),
        dns.message.make_query("missing.example.test.", "A"),
        dns.message.make_query(ZONE, "NS", use_edns=0),
    ]
    async with connect(client.host, client.port) as (reader, writer):
        writer.write(b"".join(frame(query) for query in queries))
        responses = [await read_response(reader) for _ in queries]
        writer.write(frame(queries[0]))
        responses.append(await read_response(reader))
    assert [response.id for response in responses] == [q.id for q in [*queries, queries[0]]]
    assert [response.rcode() for response in responses] == [
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
    ]


async def test_query_split_across_many_writes_is_reassembled(client: Client) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    data = frame(query)
    async with connect(client.host, client.port) as (reader, writer):
        for index in range(len(data)):
            writer.write(data[index : index + 1])
            await writer.drain()
            await asyncio.sleep(0)
        response = await read_response(reader)
    assert response.id == query.id
    assert response.answer


async def test_idle_connection_is_closed_after_the_timeout(provider: EmbeddedProvider) -> None:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], tcp_idle_timeout=0.2)
    await server.start()
    try:
        async with connect(*server.addresses[0]) as (reader, writer):
            writer.write(frame(dns.message.make_query(ZONE, "SOA")))
            await read_response(reader)
            assert await closed_by_server(reader)
    finally:
        await server.stop()


async def test_connections_beyond_the_limit_are_closed_and_others_keep_working(
    provider: EmbeddedProvider,
) -> None:
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], max_tcp_connections=2)
    await server.start()
    host, port = server.addresses[0]
    query = dns.message.make_query(ZONE, "SOA")
    try:
        async with connect(host, port) as first, connect(host, port) as second:
            for reader, writer in (first, second):
                writer.write(frame(query))
                assert (await read_response(reader)).id == query.id
            async with connect(host, port) as (third_reader, _):
                assert await closed_by_server(third_reader)
            first[1].write(frame(query))
            assert (await read_response(first[0])).id == query.id
        async with connect(host, port) as (reader, writer):
            writer.write(frame(query))
            assert (await read_response(reader)).id == query.id
    finally:
        await server.stop()


async def test_garbage_frames_do_not_end_the_connection(client: Client) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    garbage = [b"", b"\x00" * 5, query.to_wire()[:15], b"\xff" * 40]
    async with connect(client.host, client.port) as (reader, writer):
        writer.write(b"".join(struct.pack("!H", len(item)) + item for item in garbage))
        writer.write(frame(query))
        responses = [await read_response(reader) for _ in range(2)]
    assert responses[0].rcode() == dns.rcode.FORMERR
    assert responses[-1].id == query.id
    assert responses[-1].rcode() == dns.rcode.NOERROR
