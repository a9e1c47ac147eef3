"""Graceful shutdown of ``dns01-broker serve`` on SIGTERM: it stops accepting at once,
lets requests in flight finish within ``http.shutdown_timeout``, cuts the rest, closes
its store and providers, and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.process import Served, start
from tests.support import write_config

SLOW = """
[providers.embedded]
type = "embedded"
[providers.embedded.faults]
slow_rate = 1.0
slow_seconds = {slow}
"""


async def accepts_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except OSError:
        return False
    writer.close()
    return True


async def start_slow(tmp_path: Path, serve: list[Served], slow: float, grace: float) -> Served:
    """A broker whose every provider call takes ``slow`` seconds, stopping within ``grace``."""
    config = write_config(tmp_path, SLOW.format(slow=slow))
    text = config.read_text().replace("[http]\n", f"[http]\nshutdown_timeout = {grace}\n", 1)
    config.write_text(text)
    return await start(config, serve)


async def present(session: aiohttp.ClientSession, served: Served, token: str) -> int:
    async with session.post(
        f"{served.http}/v1/present",
        json={"domain": "www.example.test", "value": "in-flight"},
        headers={"Authorization": f"Bearer {token}"},
    ) as answer:
        return answer.status


async def test_requests_in_flight_finish_and_new_connections_are_refused(
    tmp_path: Path, serve: list[Served]
):
    served = await start_slow(tmp_path, serve, slow=3, grace=20)
    token = (tmp_path / "admin.token").read_text().strip()
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(present(session, served, token))
        await asyncio.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        for _ in range(100):
            if not await accepts_connections(served.http):
                break
            await asyncio.sleep(0.02)
        assert not await accepts_connections(served.http)
        assert not in_flight.done()  # still being served while nobody new gets in
        assert await in_flight == 201
    assert await served.stop() == 0
    log = "".join(served.log)
    assert "stopping: no new connections" in log
    assert "Traceback" not in log


async def test_a_request_past_the_shutdown_timeout_is_cut_and_serve_still_exits_cleanly(
    tmp_path: Path, serve: list[Served]
):
    served = await start_slow(tmp_path, serve, slow=60, grace=0.5)
    token = (tmp_path / "admin.token").read_text().strip()
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(present(session, served, token))
        await asyncio.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        assert await served.stop() == 0  # long before the 60 s the provider call would take
        outcome = await asyncio.gather(in_flight, return_exceptions=True)
    assert isinstance(outcome[0], aiohttp.ClientError) or outcome[0] >= 500


async def test_sigterm_repeated_until_it_exits_still_ends_in_a_clean_exit(
    tmp_path: Path, serve: list[Served]
):
    """A supervisor may repeat its SIGTERM: one that lands while the stopped broker's
    interpreter exits must not turn exit 0 into death by signal."""
    served = await start(write_config(tmp_path), serve)
    for _ in range(2000):  # every 5 ms, at most 10 s
        if served.process.returncode is not None:
            break
        served.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(served.process.wait(), 0.005)
    assert await served.stop() == 0
