from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.propagation import PropagationChecker, PropagationSettings
from tests.broker.propagation.servers import Address, Knot, Named, free_port
from tests.support import require_binary

StartKnot = Callable[..., Awaitable[Knot]]
StartNamed = Callable[..., Awaitable[Named]]
MakeChecker = Callable[..., PropagationChecker]


@pytest.fixture
async def start_knot(tmp_path: Path) -> AsyncIterator[StartKnot]:
    """``await start_knot({origin: zone_text}, listen=[(host, port)])``: a running knotd
    (on a free 127.0.0.1 port by default), stopped after the test."""
    binary = require_binary("knotd")
    require_binary("knotc")
    started: list[Knot] = []

    async def start(zones: Mapping[str, str], listen: Sequence[Address] | None = None) -> Knot:
        where = list(listen) if listen else [("127.0.0.1", free_port(["127.0.0.1"]))]
        knot = Knot(binary, tmp_path / f"knot-{len(started)}", where, zones)
        started.append(knot)
        await asyncio.to_thread(knot.start)
        return knot

    try:
        yield start
    finally:
        for knot in reversed(started):
            await asyncio.to_thread(knot.stop)


@pytest.fixture
async def start_named(tmp_path: Path) -> AsyncIterator[StartNamed]:
    """``await start_named(listen, {zone: [servers]})``: a forwarding BIND resolver."""
    binary = require_binary("named")
    started: list[Named] = []

    async def start(listen: Address, forwards: Mapping[str, Sequence[Address]]) -> Named:
        named = Named(binary, tmp_path / f"named-{len(started)}", listen, forwards)
        started.append(named)
        await asyncio.to_thread(named.start)
        return named

    try:
        yield start
    finally:
        for named in reversed(started):
            await asyncio.to_thread(named.stop)


@pytest.fixture
async def make_checker() -> AsyncIterator[MakeChecker]:
    """``make_checker(setting=value, ..., local_nameservers=..., nameserver_port=...)``;
    every checker made is closed after the test."""
    made: list[PropagationChecker] = []

    def make(
        *,
        local_nameservers: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        nameserver_port: int = 53,
        **settings: Any,
    ) -> PropagationChecker:
        checker = PropagationChecker(
            PropagationSettings(**settings),
            local_nameservers=local_nameservers or {},
            nameserver_port=nameserver_port,
        )
        made.append(checker)
        return checker

    try:
        yield make
    finally:
        for checker in made:
            await checker.close()
