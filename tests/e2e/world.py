"""A broker and pebble as a person's CLI sees them: the broker started from a config
file the CLI reads too, with pebble validating against the broker's DNS."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.peers import Pebble
from tests.support import Running

EXE = str(Path(sys.executable).parent / "dns01-broker")


class World:
    """pebble validating against a broker started from ``config`` (explicit ports, so
    the CLI reading the same config finds the broker); the config also offers pebble by
    name (``--ca pebble``)."""

    def __init__(self, config: Path, pebble: Pebble, running: Running) -> None:
        self.config = config
        self.pebble = pebble
        self.running = running

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            EXE, *args, "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 180)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    def issue_args(self, out: Path, *names: str) -> list[str]:
        """``issue`` of ``names`` from pebble into ``out``, without asking anything."""
        args = ["issue", "--out", str(out), "--directory", self.pebble.url, "--agree-tos"]
        for name in names:
            args += ["-d", name]
        return args
