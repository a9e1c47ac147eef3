"""A bounded soak: a fixed request rate for a fixed time, mixing present, cleanup,
present-and-wait and DNS queries, with provider faults on; then an audit of every name.

Starts ``dns01-broker serve`` (SQLite, the embedded zone and, with --route53, a local
Route53 from moto, each with faults injected) on loopback, drives it open-loop at
--rate requests/s from --lanes clients (each its own name, one request at a time, so
what every client was told is exact), queries its DNS at --dns-rate, samples its RSS,
and stops everything. Printed: requests served, errors by class, records lost and
orphaned (both must be 0), p50/p99 latency per operation, RSS over time.

    .venv/bin/python bench/soak/soak.py --seconds 600            # the soak of BENCHMARKS.md
    .venv/bin/python bench/soak/soak.py --seconds 15 --json      # the short run CI makes

Records lost: a value whose present was acknowledged (and not cleaned up since) that the
provider does not serve at the end. Orphaned: a value the provider serves that no
acknowledged present left there (a request cut or failed may leave either outcome:
then provider and store must agree). Exit status 1 when either is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.peers import free_dns_port, free_port  # noqa: E402 - the tests' helpers
from tests.providers.aws import MotoServer, create_zone, route53_txt  # noqa: E402

BROKER = str(Path(sys.executable).parent / "dns01-broker")
RETRIES = re.compile(r'provider_retries_total\{operation="(\w+)",provider="(\w+)"\} (\S+)')
FAULTS = """
[providers.{name}.faults]
error_rate = {error}
throttle_rate = {throttle}
slow_rate = {slow}
slow_seconds = 0.2
lost_answer_rate = {lost}
seed = {seed}
[providers.{name}.retry]
backoff = 0.05
"""


@dataclass
class Lane:
    """One client, one name: the values it was told are live, and the ones whose last
    request failed or was cut (either outcome is right for those)."""

    domain: str
    fqdn: str
    provider: str
    live: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)


@dataclass
class Tally:
    served: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)
    skipped: int = 0

    def took(self, operation: str, seconds: float) -> None:
        self.latency.setdefault(operation, []).append(seconds)


def config_text(http: int, dns_port: int, state: Path, moto: MotoServer | None, seed: int) -> str:
    rates = {"error": 0.05, "throttle": 0.05, "slow": 0.05, "lost": 0.02}
    text = f"""
[http]
listen = "127.0.0.1:{http}"
[http.rate_limit]
token_rate = 0
address_rate = 0
[dns]
listen = ["127.0.0.1:{dns_port}"]
[store]
url = "sqlite:///{state}/broker.db"
[auth]
bootstrap_token_file = "{state}/admin.token"
[challenges]
reconcile_interval = 1
max_values_per_name = 8
[propagation]
timeout = 10
[providers.embedded]
type = "embedded"
[[providers.embedded.zones]]
name = "soak.test"
nameservers = [{{ name = "ns1.soak.test", addresses = ["127.0.0.1"] }}]
""" + FAULTS.format(name="embedded", seed=seed, **rates)
    if moto is not None:
        text += f"""
[providers.aws]
type = "route53"
zones = ["r53.test"]
endpoint_url = "{moto.url}"
access_key_id = "soak"
secret_access_key = "soak"
poll_interval = 0.05
""" + FAULTS.format(name="aws", seed=seed + 1, **rates)
    return text


async def start_broker(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            BROKER, "--config", str(config), "serve", stderr=sink
        )
    for _ in range(400):
        if b"HTTP API listening on" in await asyncio.to_thread(log.read_bytes):
            return process
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"dns01-broker serve did not start; see {log}")


async def pacer(rate: float, until: float, tickets: asyncio.Queue[float], tally: Tally) -> None:
    """Issue one ticket every 1/rate s (open loop): a ticket no lane takes at once is
    counted as skipped, so a slow broker shows as skipped requests, not a lower rate."""
    interval, due = 1 / rate, time.monotonic()
    while due < until:
        now = time.monotonic()
        if now < due:
            await asyncio.sleep(due - now)
        if tickets.full():
            tally.skipped += 1
        else:
            tickets.put_nowait(due)
        due += interval


async def lane_loop(
    lane: Lane,
    tickets: asyncio.Queue[float],
    until: float,
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    rng: random.Random,
    tally: Tally,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    serial = 0
    while time.monotonic() < until:
        try:
            await asyncio.wait_for(tickets.get(), max(0.01, until - time.monotonic()))
        except TimeoutError:
            return
        roll = rng.random()
        if lane.live and (roll < 0.45 or len(lane.live) >= 4):
            operation, value = "cleanup", sorted(lane.live)[rng.randrange(len(lane.live))]
            body: dict[str, Any] = {"domain": lane.domain, "value": value}
        else:
            serial += 1
            value = f"{lane.domain.split('.')[0]}-{serial:06d}-{rng.getrandbits(32):08x}"
            body = {"domain": lane.domain, "value": value}
            operation = "present"
            if roll > 0.9 and lane.provider == "embedded":
                operation, body["wait"] = "present+wait", True
        path = "/v1/cleanup" if operation == "cleanup" else "/v1/present"
        started = time.perf_counter()
        try:
            async with session.post(url + path, json=body, headers=headers) as answer:
                status = answer.status
                reply = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors[f"{operation}: client {type(exc).__name__}"] += 1
            lane.uncertain.add(value)
            continue
        tally.took(operation, time.perf_counter() - started)
        if status in (200, 201):
            tally.served[operation] += 1
            if operation == "cleanup":
                lane.live.discard(value)
            else:
                lane.live.add(value)
            continue
        code = reply.get("code", "?") if isinstance(reply, dict) else "?"
        retryable = isinstance(reply, dict) and reply.get("retryable") is True
        tally.errors[f"{operation}: {status} {code}{' (retryable)' if retryable else ''}"] += 1
        lane.uncertain.add(value)


async def dns_loop(
    rate: float, until: float, port: int, lanes: list[Lane], rng: random.Random, tally: Tally
) -> None:
    interval, due = 1 / rate, time.monotonic()
    while due < until:
        now = time.monotonic()
        if now < due:
            await asyncio.sleep(due - now)
        due += interval
        lane = lanes[rng.randrange(len(lanes))]
        started = time.perf_counter()
        try:
            await dns.asyncquery.udp(
                dns.message.make_query(lane.fqdn, "TXT"), "127.0.0.1", port=port, timeout=2
            )
        except dns.exception.Timeout:
            tally.errors["dns: timeout (lost query)"] += 1
            continue
        tally.served["dns query"] += 1
        tally.took("dns query", time.perf_counter() - started)


async def sample_rss(pid: int, until: float, every: float, tally: Tally) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        tally.rss.append((time.monotonic() - started, kib))
        await asyncio.sleep(every)


async def audit(
    lanes: list[Lane], database: Path, dns_port: int, moto: MotoServer | None
) -> dict[str, int]:
    """After the leader finished what failures left: provider == store, and every
    acknowledged value where the clients were told it is."""
    for _ in range(300):
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            left = conn.execute(
                "SELECT count(*) FROM challenges WHERE state = 'present' AND intent IS NOT NULL"
            ).fetchone()[0]
        if left == 0:
            break
        await asyncio.sleep(0.1)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT fqdn, value FROM challenges WHERE state = 'present'")
        stored: dict[str, set[str]] = {}
        for fqdn, value in rows:
            stored.setdefault(fqdn, set()).add(value)
    lost = orphaned = disagree = 0
    for lane in lanes:
        if lane.provider == "aws":
            assert moto is not None
            served = set(await asyncio.to_thread(route53_txt, moto, lane.fqdn))
        else:
            answer = await dns.asyncquery.udp(
                dns.message.make_query(lane.fqdn, "TXT"), "127.0.0.1", port=dns_port, timeout=2
            )
            served = {b"".join(r.strings).decode() for rrset in answer.answer for r in rrset}
        known = lane.live - lane.uncertain
        lost += len(known - served)
        orphaned += len(served - lane.live - lane.uncertain)
        disagree += len(served ^ stored.get(lane.fqdn, set()))
    return {
        "lost": lost,
        "orphaned": orphaned,
        "provider_store_differ": disagree,
        "unfinished": left,
    }


async def provider_retries(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Provider calls the broker tried again (the injected faults it rode out)."""
    async with session.get(url + "/metrics") as answer:
        text = await answer.text()
    found: dict[str, float] = {}
    for match in re.finditer(
        r'provider_retries_total\{operation="(\w+)",provider="(\w+)"\} (\S+)', text
    ):
        found[f"{match.group(2)} {match.group(1)}"] = float(match.group(3))
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tally = Tally()
    moto = None
    if args.route53:
        moto = MotoServer()
        await asyncio.to_thread(moto.start)
        create_zone(moto, "r53.test.")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        state = Path(scratch)
        http, dns_port = free_port(), free_dns_port()
        config = state / "broker.toml"
        config.write_text(config_text(http, dns_port, state, moto, args.seed))
        process = await start_broker(config, state / "serve.log")
        url = f"http://127.0.0.1:{http}"
        try:
            token = (state / "admin.token").read_text().strip()
            zones = ["soak.test"] + (["r53.test"] if moto else [])
            lanes = []
            for index in range(args.lanes):
                zone = zones[index % len(zones)]
                domain = f"lane{index:03d}.{zone}"
                provider = "aws" if zone == "r53.test" else "embedded"
                lanes.append(Lane(domain, f"_acme-challenge.{domain}.", provider))
            until = time.monotonic() + args.seconds
            tickets: asyncio.Queue[float] = asyncio.Queue(maxsize=args.lanes)
            timeout = aiohttp.ClientTimeout(total=60)
            connector = aiohttp.TCPConnector(limit=args.lanes)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                await asyncio.gather(
                    pacer(args.rate, until, tickets, tally),
                    dns_loop(args.dns_rate, until, dns_port, lanes, rng, tally),
                    sample_rss(process.pid, until, max(1.0, args.seconds / 20), tally),
                    *(
                        lane_loop(lane, tickets, until, session, url, token, rng, tally)
                        for lane in lanes
                    ),
                )
                retries = await provider_retries(session, url)
            findings = await audit(lanes, state / "broker.db", dns_port, moto)
        finally:
            process.terminate()
            await process.wait()
            if moto is not None:
                await asyncio.to_thread(moto.stop)
    return {
        "seconds": args.seconds,
        "rate": args.rate,
        "dns_rate": args.dns_rate,
        "lanes": args.lanes,
        "route53": bool(args.route53),
        "served": dict(tally.served),
        "errors": dict(tally.errors),
        "skipped": tally.skipped,
        "provider_retries": retries,
        "latency_ms": {
            op: {
                "n": len(values),
                "p50": round(statistics.median(values) * 1000, 2),
                "p99": round(percentile(values, 0.99) * 1000, 2),
            }
            for op, values in sorted(tally.latency.items())
        },
        "rss_mib": [(round(t), round(kib / 1024, 1)) for t, kib in tally.rss],
        **findings,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"soak: {result['seconds']:g} s at {result['rate']:g} req/s and "
        f"{result['dns_rate']:g} DNS queries/s, {result['lanes']} clients, faults on"
        f"{', Route53 (moto) beside the embedded zone' if result['route53'] else ''}"
    )
    print(f"{'operation':<16}{'served':>9}{'p50 ms':>10}{'p99 ms':>10}")
    for op, stats in result["latency_ms"].items():
        served = result["served"].get(op, 0)
        print(f"{op:<16}{served:>9}{stats['p50']:>10.2f}{stats['p99']:>10.2f}")
    print(f"skipped tickets (no idle client): {result['skipped']}")
    retried = ", ".join(f"{k}: {v:g}" for k, v in sorted(result["provider_retries"].items()))
    print(f"provider calls retried after injected faults: {retried or 'none'}")
    print("errors by class:" + ("" if result["errors"] else " none"))
    for kind, count in sorted(result["errors"].items()):
        print(f"  {kind}: {count}")
    print(
        f"records lost: {result['lost']}   orphaned: {result['orphaned']}   "
        f"provider/store differ: {result['provider_store_differ']}   "
        f"unfinished intents: {result['unfinished']}"
    )
    print("RSS MiB over time (s, MiB): " + ", ".join(f"{t}:{m}" for t, m in result["rss_mib"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=100, help="HTTP requests per second")
    parser.add_argument("--dns-rate", type=float, default=200, help="DNS queries per second")
    parser.add_argument("--lanes", type=int, default=64, help="clients, one name each")
    parser.add_argument("--route53", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    print(json.dumps(result)) if args.json else print_table(result)
    failed = result["lost"] or result["orphaned"] or result["provider_store_differ"]
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
