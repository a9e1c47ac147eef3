"""Replicas on PostgreSQL: how soon a value presented through one replica is answered by
another one's DNS server, and present+cleanup throughput of one replica on SQLite, one on
PostgreSQL and two on PostgreSQL, all in the same run.

Starts a throwaway PostgreSQL cluster on loopback (as the postgres user when root; or
give --postgres URL), real ``dns01-broker serve`` processes, and wrk; stops them all.

    .venv/bin/python bench/replicas/bench.py                  # 200 visibility trials, 3 rounds
    .venv/bin/python bench/replicas/bench.py --trials 500 --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import dns.asyncquery
import dns.message

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.peers import Postgres, free_dns_port, free_port  # noqa: E402 - the tests' helpers

BROKER = str(Path(sys.executable).parent / "dns01-broker")
LUA = Path(__file__).parents[1] / "present" / "pairs.lua"
VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjE{:03d}"


class Replica:
    def __init__(self, process: asyncio.subprocess.Process, http: str, dns_port: int) -> None:
        self.process = process
        self.http = http
        self.dns_port = dns_port

    async def serves(self, name: str, value: str) -> bool:
        query = dns.message.make_query(name, "TXT")
        answer = await dns.asyncquery.udp(query, "127.0.0.1", port=self.dns_port, timeout=1)
        return any(b"".join(r.strings).decode() == value for s in answer.answer for r in s)


@asynccontextmanager
async def replicas(
    work: Path, store_url: str, count: int, name: str
) -> AsyncIterator[tuple[list[Replica], str]]:
    """``count`` replicas on one store (each on ports of its own, logging warnings only);
    yields them and a token for *.example.test."""
    base = (
        f'[store]\nurl = "{store_url}"\n[auth]\nbootstrap_token_file = "{work}/{name}.token"\n'
        '[challenges]\nmax_lease = "7d"\nmax_values_per_name = 1000\n[log]\nlevel = "WARNING"\n'
    )
    configs = []
    for index in range(count):
        http_port, dns_port = free_port(), free_dns_port()
        config = work / f"{name}-{index}.toml"
        config.write_text(
            f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
            # wrk sends thousands of requests a second with one token: no rate limits
            "[http.rate_limit]\naddress_rate = 0\ntoken_rate = 0\n"
            f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n{base}'
        )
        configs.append((config, http_port, dns_port))
    token = await _cli("--config", str(configs[0][0]), "token", "create", "--name", "bench",
                       "--allow", "*.example.test")  # fmt: skip
    started: list[Replica] = []
    try:
        for config, http_port, dns_port in configs:
            process = await asyncio.create_subprocess_exec(BROKER, "--config", str(config), "serve")
            started.append(Replica(process, f"http://127.0.0.1:{http_port}", dns_port))
            await _listening(http_port)
        yield started, token
    finally:
        for replica in started:
            if replica.process.returncode is None:
                replica.process.terminate()
                await replica.process.wait()


async def _listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on port {port}")


async def _cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        BROKER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(err.decode())
    return out.decode().strip()


async def visibility(trials: int, a: Replica, b: Replica, token: str) -> list[float]:
    """Seconds from a's present response to b's DNS server answering the value."""
    delays = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for trial in range(trials):
            name, value = f"v{trial}.example.test", VALUE.format(trial % 1000)
            body = {"domain": name, "value": value}
            async with session.post(a.http + "/v1/present", json=body) as response:
                assert response.status == 201, await response.text()
            answered = time.perf_counter()
            while not await b.serves(f"_acme-challenge.{name}.", value):
                if time.perf_counter() - answered > 5:
                    raise RuntimeError(f"{name} never reached the other replica")
            delays.append(time.perf_counter() - answered)
    return delays


async def wrk(replicas: list[Replica], token: str, seconds: int, connections: int) -> str:
    """wrk against every replica at once, the connections split between them."""
    share = max(1, connections // len(replicas))
    runs = []
    for index, replica in enumerate(replicas):
        env = {**os.environ, "BENCH_TOKEN": token, "BENCH_PREFIX": f"r{index}-{time.time_ns()}"}
        command = ["wrk", "-t1", f"-c{share}", f"-d{seconds}s", "-s", str(LUA)]
        runs.append(
            asyncio.create_subprocess_exec(
                *command, replica.http + "/v1/present", stdout=asyncio.subprocess.PIPE, env=env
            )
        )
    processes = await asyncio.gather(*runs)
    outputs = [(await p.communicate())[0].decode() for p in processes]
    results = [re.search(r"RESULT (.*)", out) for out in outputs]
    fields = [dict(kv.split("=") for kv in m.group(1).split()) for m in results if m]
    requests = sum(int(f["requests"]) for f in fields)
    errors = sum(int(f["errors"]) for f in fields)
    p99 = max(float(f["p99_ms"]) for f in fields)
    pairs = requests / 2 / seconds
    return f"{pairs:8.0f} pairs/s  errors={errors}  worst p99={p99:.1f} ms"


async def statements_per_request(
    cluster: Postgres, server: str, work: Path, count: int
) -> tuple[float, float, list[float]]:
    """Statements the replica sends to PostgreSQL per present and per cleanup, counted in
    the server's own statement log (``log_statement = all`` on a database of its own)
    between two marker queries; plus the present latencies of that run."""
    url = await _database(server, "trips")
    admin = await asyncpg.connect(server)
    try:
        await admin.execute("ALTER DATABASE bench_trips SET log_statement = 'all'")
    finally:
        await admin.close()
    assert cluster.directory is not None
    log = cluster.directory / "log"
    async with replicas(work, url, 1, "trips") as ((replica,), token):
        await _one_kind(replica, token, 20, "present", "warm")  # pools and caches filled
        marks = await asyncpg.connect(url)
        try:
            spans = []
            for operation in ("present", "cleanup"):
                await marks.execute(f"SELECT 'bench-mark-{operation}-start'")
                times = await _one_kind(replica, token, count, operation)
                await marks.execute(f"SELECT 'bench-mark-{operation}-end'")
                spans.append((operation, times))
        finally:
            await marks.close()
    text = log.read_text(errors="replace")
    counts = []
    for operation, _ in spans:
        inside = text.split(f"bench-mark-{operation}-start", 1)[1].split(
            f"bench-mark-{operation}-end", 1
        )[0]
        statements = len(re.findall(r"LOG:  (?:statement|execute [^:]*):", inside))
        counts.append(statements / count)
    return counts[0], counts[1], spans[0][1]


async def _one_kind(
    replica: Replica, token: str, count: int, operation: str, prefix: str = "t"
) -> list[float]:
    """Seconds per request: ``count`` presents (or cleanups) of new values, in turn."""
    times = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for index in range(count):
            body = {"domain": f"{prefix}{index}.example.test", "value": VALUE.format(index % 1000)}
            started = time.perf_counter()
            async with session.post(f"{replica.http}/v1/{operation}", json=body) as response:
                assert response.status in (200, 201), await response.text()
            times.append(time.perf_counter() - started)
    return times


def latency(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):.2f} ms  p99 {ms[int(0.99 * (len(ms) - 1))]:.2f} ms"


def summary(delays: list[float]) -> str:
    ms = sorted(d * 1000 for d in delays)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    return (
        f"median {statistics.median(ms):.2f} ms  p95 {p95:.2f} ms  max {ms[-1]:.2f} ms "
        f"({len(ms)} trials)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (default: a throwaway one)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (make bench installs it)")
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    cluster = None
    if args.postgres is None:
        cluster = Postgres()
        await cluster.start()
    server = args.postgres or cluster.url()  # type: ignore[union-attr]
    try:
        print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{args.connections} -d{args.seconds}s")
        async with replicas(work, await _database(server, "visibility"), 2, "vis") as (
            (a, b),
            token,
        ):
            print("present on one replica -> answered by the other's DNS:",
                  summary(await visibility(args.trials, a, b, token)))  # fmt: skip
        if cluster is not None:
            per_present, per_cleanup, pg_times = await statements_per_request(
                cluster, server, work, args.trials
            )
            print(f"statements sent to PostgreSQL: {per_present:.2f} per present, "
                  f"{per_cleanup:.2f} per cleanup (background work included)")  # fmt: skip
            async with replicas(work, f"sqlite:///{work}/latency.db", 1, "lat") as (
                (replica,),
                token,
            ):
                sqlite_times = await _one_kind(replica, token, args.trials, "present")
            print(f"present latency, one client: PostgreSQL {latency(pg_times)}; "
                  f"SQLite {latency(sqlite_times)}")  # fmt: skip
        for round_ in range(1, args.rounds + 1):
            for label, count, url in (
                ("sqlite, 1 replica", 1, f"sqlite:///{work}/round{round_}.db"),
                ("postgresql, 1 replica", 1, await _database(server, f"one{round_}")),
                ("postgresql, 2 replicas", 2, await _database(server, f"two{round_}")),
            ):
                async with replicas(work, url, count, f"r{round_}-{count}") as (started, token):
                    result = await wrk(started, token, args.seconds, args.connections)
                print(f"round {round_}  {label:<24} {result}")
    finally:
        if cluster is not None:
            await cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


async def _database(server: str, name: str) -> str:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS bench_{name}")
        await connection.execute(f"CREATE DATABASE bench_{name}")
    finally:
        await connection.close()
    return server.rsplit("/", 1)[0] + f"/bench_{name}"


if __name__ == "__main__":
    asyncio.run(main())
