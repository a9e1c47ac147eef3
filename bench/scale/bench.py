"""Scale and start-up: present latency, RSS and CPU of one ``dns01-broker serve`` (SQLite)
as live records grow to 10,000 and 1,000 ``wait`` requests stay in flight, and the time
from start to ready with those records in the store against an empty store.

Everything runs on loopback and stops by itself:

- the broker serves two embedded zones: ``example.test`` (the records, and the probes)
  and ``lag.test`` (the waiters), whose propagation targets are the broker's own DNS
  listener and a *lagging secondary* run by this script: a small UDP server answering
  NODATA for every name until it is told to serve the waiters' values, as a secondary
  behind on its zone transfers would;
- records are filled through the HTTP API (``POST /v1/present``, 32 at a time, one
  value per name ``r<N>.example.test``, lease 1 h), as clients would;
- waiters are ``POST /v1/present`` with ``"wait": true`` on ``w<N>.lag.test``: each
  stays in flight, polling the lagging secondary, until the script releases them (the
  secondary then serves every value and each wait must end 201 with propagation ready);
- present latency is sequential ``POST /v1/present`` of new names in example.test (the
  value is cleaned up after each, untimed), without and with ``"wait": true`` (ready at
  once: one round against the broker's own listener), each probe taken in turn with one
  on a second, idle broker with an empty store: the reference of every row is measured
  in the same seconds, so the ratio holds on a machine whose other load comes and goes;
- RSS is VmRSS of the broker process, CPU its utime+stime over a quiet window;
- start-up is spawn to the first 200 of ``/readyz``, on an empty store and on the store
  holding the records, alternately, ``--starts`` times each.

    .venv/bin/python bench/scale/bench.py             # 0..10,000 records, 0..1,000 waiters
    .venv/bin/python bench/scale/bench.py --quick     # seconds, for CI (tests/e2e)
    .venv/bin/python bench/scale/bench.py --json      # the table, then one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.peers import free_dns_port, free_port  # noqa: E402 - the tests' helpers

BROKER = str(Path(sys.executable).parent / "dns01-broker")
VALUE = "ScaleBenchValue0123456789abcdefghijklmnopq{:06d}"
TICK = os.sysconf("SC_CLK_TCK")
BATCH = 32


class LaggingSecondary(asyncio.DatagramProtocol):
    """Authoritative NODATA for every query until ``release``; then the released names'
    TXT values. Counts queries and the names asked."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0
        self.names: set[bytes] = set()
        self.released: dict[bytes, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] - a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.queries += 1
        end = 12
        while end < len(data) and data[end]:
            end += data[end] + 1
        question = data[12 : end + 5]
        qname = data[12 : end + 1].lower()
        self.names.add(qname)
        value = self.released.get(qname)
        if value is None:
            # ID, QR AA (RD echoed), one question, nothing else: NODATA
            flags = 0x8400 | (data[2] & 0x01) << 8
            head = data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0)
            self.transport.sendto(head + question, addr)
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "TXT", f'"{value}"')
        )
        self.transport.sendto(response.to_wire(), addr)

    def release(self, names: dict[str, str]) -> None:
        for name, value in names.items():
            self.released[_labels(name)] = value


def _labels(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").lower().split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


@dataclass
class Broker:
    process: asyncio.subprocess.Process
    http: str
    started: float
    ready_after: float = 0.0

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Setup:
    work: Path
    http_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_dns_port)
    lag_port: int = field(default_factory=free_dns_port)
    rate_limit: bool = False

    def config(self, db: str) -> Path:
        path = self.work / f"{db}.toml"
        path.write_text(
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\nmax_in_flight = 4096\n'
            "[http.rate_limit]\naddress_rate = 0\ntoken_rate = 0\n"
            f'[dns]\nlisten = ["127.0.0.1:{self.dns_port}"]\n'
            # off by default: the broker's own checks and the probes all come from 127.0.0.1
            f"[dns.rate_limit]\nenabled = {str(self.rate_limit).lower()}\n"
            f'[store]\nurl = "sqlite:///{self.work}/{db}.db"\n'
            f'[auth]\nbootstrap_token_file = "{self.work}/{db}.admin"\n'
            '[challenges]\nmax_lease = "1d"\nreconcile_interval = "60s"\n'
            '[audit]\nenabled = false\n[log]\nlevel = "WARNING"\n'
            "[propagation]\ntimeout = 300\n"
            f'[propagation.nameservers]\n"lag.test" = ["127.0.0.1:{self.dns_port}", '
            f'"127.0.0.1:{self.lag_port}"]\n'
            '[providers.embedded]\ntype = "embedded"\n'
            '[[providers.embedded.zones]]\nname = "example.test"\n'
            '[[providers.embedded.zones]]\nname = "lag.test"\n'
        )
        return path


async def cli(config: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        BROKER,
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(err.decode())
    return out.decode().strip()


@asynccontextmanager
async def serving(setup: Setup, config: Path) -> AsyncIterator[Broker]:
    started = time.perf_counter()
    # bytecode written by the first start is read by the later ones, as an installed
    # package's (pip compiles at install) would be
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    process = await asyncio.create_subprocess_exec(
        BROKER, "--config", str(config), "serve", stdout=asyncio.subprocess.DEVNULL, env=env
    )
    broker = Broker(process, f"http://127.0.0.1:{setup.http_port}", started)
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the broker exited with {process.returncode}")
                try:
                    async with session.get(broker.http + "/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.005)
        broker.ready_after = time.perf_counter() - started
        yield broker
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


class Client:
    def __init__(self, broker: Broker, token: str) -> None:
        self.base = broker.http
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=600),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(self, path: str, body: dict[str, Any], *expected: int) -> dict[str, Any]:
        async with self.session.post(self.base + path, json=body) as response:
            data: dict[str, Any] = await response.json(content_type=None)
            if response.status not in expected:
                raise RuntimeError(f"{path} {body} -> {response.status} {data}")
            return data

    async def fill(self, start: int, stop: int) -> float:
        """Present r<start>..r<stop-1>.example.test, BATCH at a time; seconds taken."""
        began = time.perf_counter()
        queue = iter(range(start, stop))

        async def lane() -> None:
            for index in queue:
                body = {"domain": f"r{index}.example.test", "value": VALUE.format(index)}
                await self.call("/v1/present", {**body, "lease": 3600}, 201)

        await asyncio.gather(*(lane() for _ in range(BATCH)))
        return time.perf_counter() - began

    async def probe_one(self, tag: str, wait: bool) -> float:
        """Seconds for one present of a new name (cleaned up after, untimed)."""
        body: dict[str, Any] = {"domain": f"p{tag}.example.test", "value": VALUE.format(0)}
        began = time.perf_counter()
        await self.call("/v1/present", {**body, "wait": wait}, 201)
        elapsed = time.perf_counter() - began
        await self.call("/v1/cleanup", body, 200)
        return elapsed


def start_waiters(
    client: Client, count: int, tag: str
) -> tuple[list[asyncio.Task[dict[str, Any]]], dict[str, str]]:
    """``count`` presents with wait on lag.test, in flight."""
    names = {f"_acme-challenge.w{tag}-{i}.lag.test.": VALUE.format(i) for i in range(count)}
    body = {"wait": True, "timeout": 300}
    tasks = [
        asyncio.ensure_future(client.call("/v1/present", {"fqdn": n, "value": v, **body}, 201))
        for n, v in names.items()
    ]
    return tasks, names


async def until_asked(
    lag: LaggingSecondary, names: dict[str, str], tasks: list[asyncio.Task[dict[str, Any]]]
) -> None:
    """Returns once the lagging secondary has been asked for every waiter's name."""
    wanted = {_labels(name) for name in names}
    deadline = time.monotonic() + 120
    while not wanted <= lag.names:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(wanted & lag.names)} of {len(names)} waiters started")
        for task in tasks:
            if task.done():
                task.result()
        await asyncio.sleep(0.05)


@dataclass
class Row:
    records: int
    waiters: int
    rss: int
    cpu: float  # broker CPU seconds per second over the quiet window
    lag_qps: float  # queries a second the lagging secondary got
    present: list[float]
    present_wait: list[float]
    empty_present: list[float]  # the same probes, interleaved, on the empty-store broker
    empty_present_wait: list[float]


async def measure(
    broker: Broker,
    client: Client,
    reference: Client,
    lag: LaggingSecondary,
    records: int,
    waiters: int,
    probes: int,
    window: float,
) -> Row:
    await asyncio.sleep(window / 4)  # settle
    cpu, queries, began = broker.cpu(), lag.queries, time.perf_counter()
    await asyncio.sleep(window)
    elapsed = time.perf_counter() - began
    cpu = (broker.cpu() - cpu) / elapsed
    lag_qps = (lag.queries - queries) / elapsed
    rss = broker.rss()
    tag = f"{records}-{waiters}"
    timed: dict[tuple[bool, bool], list[float]] = {}
    for wait in (False, True):
        for index in range(probes):
            # one probe here, one on the empty store, in turn: the same moment's machine
            for empty, on in ((False, client), (True, reference))[:: 1 if index % 2 else -1]:
                label = f"{tag}{'w' if wait else ''}-{index}"
                timed.setdefault((wait, empty), []).append(await on.probe_one(label, wait))
    return Row(
        records, waiters, rss, cpu, lag_qps,
        timed[False, False], timed[True, False], timed[False, True], timed[True, True],
    )  # fmt: skip


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    setup = Setup(work, rate_limit=args.dns_rate_limit)
    setup_empty = Setup(work, rate_limit=args.dns_rate_limit, lag_port=setup.lag_port)
    loop = asyncio.get_running_loop()
    lag = LaggingSecondary()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: lag, local_addr=("127.0.0.1", setup.lag_port)
    )
    rows: list[Row] = []
    fills: list[tuple[int, float]] = []
    try:
        empty, full = setup_empty.config("empty"), setup.config("full")
        token = await cli(
            full,
            "token",
            "create",
            "--name",
            "bench",
            "--allow",
            "*.example.test",
            "--allow",
            "*.lag.test",
        )
        empty_token = await cli(
            empty, "token", "create", "--name", "bench", "--allow", "*.example.test"
        )
        async with serving(setup, full) as broker, serving(setup_empty, empty) as idle:
            client, reference = Client(broker, token), Client(idle, empty_token)
            try:
                filled = 0
                for records in args.records:
                    fills.append((records - filled, await client.fill(filled, records)))
                    filled = records
                    rows.append(
                        await measure(
                            broker, client, reference, lag, records, 0, args.probes, args.window
                        )
                    )
                for waiters in args.waiters:
                    if waiters == 0:
                        continue
                    tasks, names = start_waiters(client, waiters, str(waiters))
                    try:
                        await until_asked(lag, names, tasks)
                        rows.append(
                            await measure(
                                broker,
                                client,
                                reference,
                                lag,
                                filled,
                                waiters,
                                args.probes,
                                args.window,
                            )
                        )
                        lag.release(names)
                        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
                    finally:
                        for task in tasks:
                            task.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                    if not all(r["propagation"]["ready"] for r in results):
                        raise RuntimeError("a waiter ended without its value ready")
                    await asyncio.gather(
                        *(
                            client.call("/v1/cleanup", {"fqdn": n, "value": v}, 200)
                            for n, v in names.items()
                        )
                    )
            finally:
                await client.close()
                await reference.close()
        starts: dict[str, list[float]] = {"empty": [], "full": []}
        for _ in range(args.starts):
            for label, where, config in (("empty", setup_empty, empty), ("full", setup, full)):
                async with serving(where, config) as broker:
                    starts[label].append(broker.ready_after)
    finally:
        transport.close()
        shutil.rmtree(work, ignore_errors=True)
    return report(rows, fills, starts)


def report(
    rows: list[Row], fills: list[tuple[int, float]], starts: dict[str, list[float]]
) -> dict[str, Any]:
    print(
        f"{'records':>7} {'waiters':>7} {'RSS MiB':>7} {'CPU %':>5} {'lag q/s':>7} "
        f"{'present p50 p95 ms':>18} {'empty p50':>9} {'x':>5} "
        f"{'+wait p50 p95 ms':>16} {'empty p50':>9} {'x':>5}"
    )
    table = []
    for row in rows:
        p50, p95, e50 = ms(row.present, 0.5), ms(row.present, 0.95), ms(row.empty_present, 0.5)
        w50, w95 = ms(row.present_wait, 0.5), ms(row.present_wait, 0.95)
        ew50 = ms(row.empty_present_wait, 0.5)
        print(
            f"{row.records:>7} {row.waiters:>7} {row.rss / 2**20:>7.1f} {100 * row.cpu:>5.1f} "
            f"{row.lag_qps:>7.0f} {p50:>9.2f} {p95:>8.2f} {e50:>9.2f} {p50 / e50:>5.2f} "
            f"{w50:>8.2f} {w95:>7.2f} {ew50:>9.2f} {w50 / ew50:>5.2f}"
        )
        table.append(
            {
                "records": row.records,
                "waiters": row.waiters,
                "rss": row.rss,
                "cpu": row.cpu,
                "lag_qps": row.lag_qps,
                "present_p50_ms": p50,
                "present_p95_ms": p95,
                "empty_present_p50_ms": e50,
                "present_wait_p50_ms": w50,
                "present_wait_p95_ms": w95,
                "empty_present_wait_p50_ms": ew50,
            }
        )
    by_records = [r for r in rows if r.waiters == 0]
    by_waiters = [r for r in rows if r.waiters > 0 or r is by_records[-1]]
    per_record = slope([r.records for r in by_records], [r.rss for r in by_records])
    per_waiter = slope([r.waiters for r in by_waiters], [r.rss for r in by_waiters])
    cpu_waiter = slope([r.waiters for r in by_waiters], [r.cpu for r in by_waiters])
    qps_waiter = slope([r.waiters for r in by_waiters], [r.lag_qps for r in by_waiters])
    fill_rate = sum(n for n, _ in fills) / max(sum(s for _, s in fills), 1e-9)
    empty, full = statistics.median(starts["empty"]), statistics.median(starts["full"])
    records = by_records[-1].records
    restore_us = (full - empty) / records * 1e6 if records else 0.0
    print(
        f"per live record: {per_record:.0f} B RSS; filled through the API at "
        f"{fill_rate:.0f} presents/s"
    )
    print(
        f"per waiting client: {per_waiter:.0f} B RSS, {1000 * cpu_waiter:.3f} ms CPU/s, "
        f"{qps_waiter:.2f} queries/s to the lagging server"
    )
    print(
        f"start to ready: empty store {1000 * empty:.0f} ms, {records} records "
        f"{1000 * full:.0f} ms ({restore_us:.1f} us a record; median of "
        f"{len(starts['full'])}: {' '.join(f'{1000 * s:.0f}' for s in starts['full'])} ms)"
    )
    return {
        "rows": table,
        "per_record_rss": per_record,
        "per_waiter_rss": per_waiter,
        "per_waiter_cpu": cpu_waiter,
        "per_waiter_qps": qps_waiter,
        "fill_rate": fill_rate,
        "start_empty": empty,
        "start_full": full,
        "starts": starts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: for CI")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--records", default="0,2500,5000,10000")
    parser.add_argument("--waiters", default="0,250,500,1000")
    parser.add_argument("--probes", type=int, default=200, help="presents timed per row")
    parser.add_argument("--window", type=float, default=4.0, help="seconds of CPU sampling")
    parser.add_argument(
        "--dns-rate-limit",
        action="store_true",
        help="keep the DNS server's response rate limit on (the checks come from 127.0.0.1)",
    )
    parser.add_argument("--starts", type=int, default=3, help="start-ups timed per store")
    args = parser.parse_args()
    if args.quick:
        args.records, args.waiters, args.probes, args.window, args.starts = (
            "0,200",
            "0,20",
            20,
            0.5,
            1,
        )
    args.records = sorted({0, *map(int, args.records.split(","))})
    args.waiters = sorted(map(int, args.waiters.split(",")))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(load)} at the start")
    result = asyncio.run(run(args))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {' '.join(load)} at the end")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
