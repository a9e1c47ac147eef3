"""Slow clients (slowloris) lose their connection: a head that dribbles in past
``http.header_timeout``, a body past ``http.body_timeout`` (408 first), an idle
keep-alive past ``http.keepalive_timeout``. Raw sockets, so nothing is buffered for us."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import StartBroker
from tests.support import Running, write_settings

TIMEOUTS = {
    "DNS01_BROKER_HTTP__HEADER_TIMEOUT": "0.5",
    "DNS01_BROKER_HTTP__BODY_TIMEOUT": "0.5",
}
"""Short deadlines; keep-alive stays at its 75 s, longer than any dribble here, so only the
head deadline can close these connections."""
WHOAMI = b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def store_backend() -> str:
    """Connection handling never reaches the store: SQLite is enough."""
    return "sqlite"


@pytest.fixture
async def running(start_broker: StartBroker, tmp_path: Any) -> Running:
    return await start_broker(write_settings(tmp_path, **TIMEOUTS))


async def connect(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = running.broker._runner.addresses[0][:2]  # type: ignore[union-attr]
    return await asyncio.open_connection(host, port)


async def dribble_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    """Send ``data`` a byte every 0.1 s; what the server sent before closing. Fails if
    the server still holds the connection when ``data`` runs out."""
    for byte in data:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.1)
        if reader.at_eof():
            break
    else:
        received = await asyncio.wait_for(reader.read(65536), 1)
        assert reader.at_eof() or not received, "the server kept a slow connection open"
    return await read_to_close(reader)


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    except ConnectionError:
        pass
    return received


def slow_header(length: int) -> bytes:
    return b"X-Slow: " + b"a" * length


async def test_a_head_that_dribbles_in_is_closed_without_an_answer(running: Running) -> None:
    reader, writer = await connect(running)
    head = b"POST /v1/present HTTP/1.1\r\nHost: x\r\n" + slow_header(200)
    assert await dribble_until_closed(reader, writer, head) == b""
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed(running: Running) -> None:
    reader, writer = await connect(running)
    assert await read_to_close(reader) == b""
    writer.close()


async def test_a_second_head_that_dribbles_in_is_closed_after_the_first_is_answered(
    running: Running,
) -> None:
    reader, writer = await connect(running)
    writer.write(WHOAMI)
    await writer.drain()
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 401 ")
    length = int(first.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    rest = await dribble_until_closed(
        reader, writer, b"GET /v1/whoami HTTP/1.1\r\n" + slow_header(200)
    )
    assert rest == b""
    writer.close()


async def test_a_body_that_dribbles_in_gets_408_and_the_connection_closed(
    running: Running,
) -> None:
    reader, writer = await connect(running)
    writer.write(b"POST /v1/present HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    answer = await read_to_close(reader)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in head
    problem = json.loads(body)
    assert (problem["code"], problem["retryable"]) == ("request-timeout", True)
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_and_a_prompt_one_is_served(
    start_broker: StartBroker, tmp_path: Any
) -> None:
    running = await start_broker(
        write_settings(tmp_path, **TIMEOUTS, DNS01_BROKER_HTTP__KEEPALIVE_TIMEOUT="1")
    )
    reader, writer = await connect(running)
    for _ in range(4):
        await asyncio.sleep(0.3)
        writer.write(WHOAMI)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 ")
        await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    assert await read_to_close(reader) == b""
    writer.close()
