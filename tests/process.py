"""The real ``dns01-broker`` process, started as users start it: ``serve`` on a config
file, and one-shot CLI commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import dns.asyncquery
import dns.message

EXE = str(Path(sys.executable).parent / "dns01-broker")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run one CLI command: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Served:
    """A ``dns01-broker serve`` process; its log is read until it says where it listens,
    then drained into ``log`` until it exits. An unread pipe would fill: the broker
    would block writing its log, and once killed, ``wait()`` would never return, since
    asyncio finishes a process only when its pipes are read to the end."""

    def __init__(self, process: asyncio.subprocess.Process, log: list[str]) -> None:
        self.process = process
        self.log = log
        self.http = ""
        self.dns = ("", 0)
        self._drain: asyncio.Task[None] | None = None

    async def wait_ready(self) -> None:
        assert self.process.stderr is not None
        while not self.http:
            line = (await asyncio.wait_for(self.process.stderr.readline(), 15)).decode()
            assert line, "serve exited early:\n" + "".join(self.log)
            self.log.append(line)
            if match := re.search(r"DNS listening on ([^\s\"]+) port (\d+)", line):
                self.dns = (match.group(1), int(match.group(2)))
            if match := re.search(r"HTTP API listening on (https?://[^\s\"]+)", line):
                self.http = match.group(1)
        self._drain = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode())

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 15)
        else:
            assert self.process.stderr is not None
            rest = await asyncio.wait_for(self.process.stderr.read(), 15)
            self.log.append(rest.decode())
        return await asyncio.wait_for(self.process.wait(), 15)

    async def txt(self, name: str) -> list[str]:
        answer = await dns.asyncquery.udp(
            dns.message.make_query(name, "TXT"), self.dns[0], port=self.dns[1], timeout=2
        )
        return [b"".join(r.strings).decode() for rrset in answer.answer for r in rrset]


async def start(config: Path, served: list[Served]) -> Served:
    """Start ``serve`` on ``config``; ``served`` (the ``serve`` fixture) stops it after."""
    process = await asyncio.create_subprocess_exec(
        EXE, "--config", str(config), "serve", stderr=asyncio.subprocess.PIPE
    )
    item = Served(process, [])
    served.append(item)
    await item.wait_ready()
    return item
