"""kill -9 in the middle of present/cleanup bursts, again and again: after each restart
the provider serves exactly the store's live values (no orphaned TXT value, no lost live
one), and every acknowledged present or cleanup holds.

The broker is killed at random moments (seeded) while several clients present and clean
up; on Route53 (moto), with slow and failing provider calls injected, so kills often land
between a write-ahead intent and its outcome.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.process import Served, start
from tests.providers.aws import MotoServer, route53_config, route53_txt
from tests.support import write_config

WORKERS = 6
KILLS = 8
SEED = 20261203


@dataclass
class Model:
    """What clients were told, per name: values acknowledged present, and values whose
    last request was cut by a kill (either outcome is right for those)."""

    live: dict[str, set[str]] = field(default_factory=dict)
    uncertain: dict[str, set[str]] = field(default_factory=dict)
    acknowledged: int = 0
    cut: int = 0

    def settle(self, name: str, actual: set[str]) -> None:
        """After a check: an uncertain value is whatever the restarted broker says."""
        self.live[name] = actual
        self.uncertain[name] = set()


async def client(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    name: str,
    model: Model,
    rng: random.Random,
) -> None:
    """Present and clean up at ``name`` (at most 4 values) until the broker dies."""
    headers = {"Authorization": f"Bearer {token}"}
    serial = 0
    while True:
        live = model.live.setdefault(name, set())
        if len(live) < 4 and (not live or rng.random() < 0.6):
            serial += 1
            operation, value = (
                "present",
                f"{name.split('.', maxsplit=1)[0]}-{rng.getrandbits(64):016x}",
            )
        else:
            operation, value = "cleanup", sorted(live)[rng.randrange(len(live))]
        body = {"domain": name, "value": value}
        try:
            async with session.post(f"{url}/v1/{operation}", json=body, headers=headers) as answer:
                status = answer.status
                await answer.read()
        except (TimeoutError, aiohttp.ClientError):
            model.uncertain.setdefault(name, set()).add(value)
            model.cut += 1
            return
        if status >= 500:  # a retryable failure: the value may or may not stay
            model.uncertain.setdefault(name, set()).add(value)
            continue
        assert status in (200, 201), f"{operation} {body}: {status}"
        model.acknowledged += 1
        if operation == "present":
            live.add(value)
        else:
            live.discard(value)


def store_live(database: Path) -> dict[str, set[str]]:
    """Live values per challenge name, read from the SQLite store."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT fqdn, value FROM challenges WHERE state = 'present'")
        live: dict[str, set[str]] = {}
        for fqdn, value in rows:
            live.setdefault(fqdn, set()).add(value)
        return live


def unfinished(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM challenges WHERE state = 'present' AND intent IS NOT NULL"
        ).fetchone()
        return int(row[0])


Served_ = Callable[[Served, str], Awaitable[set[str]]]


async def served_by_dns(served: Served, fqdn: str) -> set[str]:
    return set(await served.txt(fqdn))


def served_by_route53(moto: MotoServer) -> Served_:
    async def values(served: Served, fqdn: str) -> set[str]:
        return set(await asyncio.to_thread(route53_txt, moto, fqdn))

    return values


async def kill_and_check(
    tmp_path: Path, serve: list[Served], extra: str, zone: str, provider_values: Served_
) -> Model:
    config = write_config(tmp_path, "[challenges]\nreconcile_interval = 0.2\n" + extra)
    text = config.read_text().replace(
        "[http]\n", "[http]\nrate_limit = { token_rate = 0, address_rate = 0 }\n", 1
    )
    config.write_text(text)
    database = tmp_path / "broker.db"
    rng = random.Random(SEED)
    names = [f"w{worker}.{zone}" for worker in range(WORKERS)]
    model = Model()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(KILLS + 1):
            served = await start(config, serve)
            token = (tmp_path / "admin.token").read_text().strip()
            await check(served, database, names, model, provider_values)
            clients = [
                asyncio.create_task(client(session, served.http, token, name, model, rng))
                for name in names
            ]
            # a burst of at least one answered request a client, however loaded the
            # machine, then a random moment more
            floor = model.acknowledged + WORKERS
            for _ in range(400):
                if model.acknowledged >= floor:
                    break
                await asyncio.sleep(0.025)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            served.process.kill()
            await served.process.wait()
            await asyncio.gather(*clients)
        served = await start(config, serve)
        await check(served, database, names, model, provider_values)
    return model


async def check(
    served: Served, database: Path, names: list[str], model: Model, provider_values: Served_
) -> None:
    """Once the leader has finished what the kill left, provider == store == model."""
    for _ in range(200):
        if unfinished(database) == 0:
            break
        await asyncio.sleep(0.05)
    assert unfinished(database) == 0, "the leader did not finish the changes a kill left"
    live = store_live(database)
    for name in names:
        fqdn = f"_acme-challenge.{name}."
        stored = live.get(fqdn, set())
        assert await provider_values(served, fqdn) == stored, f"provider and store differ at {fqdn}"
        known = model.live.get(name, set()) - model.uncertain.get(name, set())
        gone = set(model.uncertain.get(name, set()))
        assert known <= stored, f"an acknowledged present at {fqdn} was lost"
        assert stored <= known | gone, f"an acknowledged cleanup at {fqdn} came back"
        model.settle(name, stored)


@pytest.mark.timeout(120)  # nine starts of serve, each with a burst
async def test_kill_9_during_bursts_on_the_embedded_zone(tmp_path: Path, serve: list[Served]):
    model = await kill_and_check(tmp_path, serve, "", "example.test", served_by_dns)
    assert model.acknowledged >= KILLS * WORKERS
    assert model.cut >= KILLS


@pytest.mark.timeout(120)
async def test_kill_9_during_bursts_on_route53_with_faults(
    tmp_path: Path, serve: list[Served], moto: MotoServer
):
    route53 = (
        route53_config(moto, "crash")
        + """
[providers.aws.faults]
slow_rate = 0.3
slow_seconds = 0.05
lost_answer_rate = 0.05
error_rate = 0.05
[providers.aws.retry]
backoff = 0.01
breaker_threshold = 50
"""
    )
    model = await kill_and_check(tmp_path, serve, route53, "r53.test", served_by_route53(moto))
    assert model.acknowledged >= KILLS * WORKERS
    assert model.cut >= KILLS
