"""Propagation checker: delay from "the last server serves the value" to "reported ready".

Two knotd servers on loopback serve ``example.test.``. Each trial presents a fresh value
on the first server, starts every polling strategy's ``wait()`` at once (each strategy
is its own PropagationChecker, so nothing is shared between them), then after a random
delay D adds the value to the second server with a dynamic update. The moment knot
acknowledges that update is "the last server serves it" (knot commits before it
answers); each strategy's delay is the time from there to its ``wait()`` returning.

Strategies: the checker's defaults; the geometric 50 ms x1.5 capped at 1 s schedule;
and a fixed 2 s loop with an immediate first check (lego's default), all run by the same
checker code in the same trials on the same servers.

    .venv/bin/python bench/propagation/bench.py                    # 30 trials, D in [0, 2] s
    .venv/bin/python bench/propagation/bench.py --max-delay 10     # longer propagation
    .venv/bin/python bench/propagation/bench.py --schedule 0.05,1.1,1  # another schedule too
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.update

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from broker.propagation import PropagationChecker, PropagationSettings  # noqa: E402

HOST = "127.0.0.1"
ZONE = "example.test."
ZONE_FILE = """$ORIGIN example.test.
$TTL 300
@   SOA ns1 hostmaster 1 3600 600 604800 30
@   NS  ns1
ns1 A   127.0.0.1
"""
KNOT_CONF = """server:
    listen: {host}@{port}
    rundir: {dir}/run
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {dir}/db
log:
  - target: stderr
    any: warning
acl:
  - id: loopback-update
    address: 127.0.0.0/8
    action: update
template:
  - id: default
    storage: {dir}
    file: "%s.zone"
    acl: loopback-update
    zonefile-sync: -1
zone:
  - domain: example.test
"""
STRATEGIES = {
    "default": {},
    "x1.5 cap 1 s": {"first_interval": 0.05, "backoff": 1.5, "max_interval": 1.0},
    "fixed 2 s (lego)": {"first_interval": 2.0, "backoff": 1.0, "max_interval": 2.0},
}


@dataclass
class Results:
    delays: dict[str, list[float]] = field(default_factory=dict)
    queries: dict[str, list[int]] = field(default_factory=dict)


def free_port() -> int:
    """A port free for both UDP and TCP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


def wait_until_answering(port: int, process: subprocess.Popen[bytes]) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"knotd exited with {process.returncode} before answering")
        with suppress(dns.exception.Timeout, OSError):
            response = dns.query.udp(query, HOST, port=port, timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
        time.sleep(0.05)
    raise RuntimeError(f"knotd did not answer on {HOST}:{port} within 15 s")


@contextmanager
def knot(directory: Path) -> Iterator[int]:
    for sub in ("run", "db"):
        (directory / sub).mkdir(parents=True)
    (directory / "example.test.zone").write_text(ZONE_FILE)
    port = free_port()
    conf = directory / "knot.conf"
    conf.write_text(KNOT_CONF.format(host=HOST, port=port, dir=directory))
    with (directory / "knot.log").open("wb") as log:
        process = subprocess.Popen(["knotd", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(port, process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def add_txt(port: int, name: str, value: str) -> None:
    update = dns.update.UpdateMessage(ZONE)
    update.add(name, 60, "TXT", f'"{value}"')
    response = await dns.asyncquery.udp(update, HOST, port=port, timeout=5)
    if response.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"update refused: {dns.rcode.to_text(response.rcode())}")


async def trial(
    number: int, ports: list[int], checkers: dict[str, PropagationChecker], delay: float
) -> tuple[dict[str, float], dict[str, int]]:
    name = f"_acme-challenge.t{number}-{secrets.token_hex(4)}.example.test."
    value = secrets.token_urlsafe(32)
    await add_txt(ports[0], name, value)
    sent_before = {label: checker.queries_sent for label, checker in checkers.items()}
    ready_at: dict[str, float] = {}

    async def wait(label: str, checker: PropagationChecker) -> None:
        report = await checker.wait(name, value, timeout=60)
        ready_at[label] = time.perf_counter()
        if not report.ready:
            raise RuntimeError(f"{label}: not ready: {report.error}")

    async with asyncio.TaskGroup() as group:
        for label, checker in checkers.items():
            group.create_task(wait(label, checker))
        await asyncio.sleep(delay)
        await add_txt(ports[1], name, value)
        served_at = time.perf_counter()
    delays = {label: ready_at[label] - served_at for label in checkers}
    sent = {label: checker.queries_sent - sent_before[label] for label, checker in checkers.items()}
    return delays, sent


async def measure(ports: list[int], args: argparse.Namespace) -> Results:
    servers = [f"{HOST}:{port}" for port in ports]
    strategies = dict(STRATEGIES)
    for text in args.schedule:
        first, backoff, cap = (float(part) for part in text.split(","))
        strategies[f"{first * 1000:g}ms x{backoff:g} cap {cap:g}s"] = {
            "first_interval": first,
            "backoff": backoff,
            "max_interval": cap,
        }
    checkers = {
        label: PropagationChecker(PropagationSettings(nameservers={ZONE: servers}, **overrides))
        for label, overrides in strategies.items()
    }
    results = Results({label: [] for label in checkers}, {label: [] for label in checkers})
    rng = random.Random(args.seed)
    try:
        for number in range(args.trials):
            delay = rng.uniform(args.min_delay, args.max_delay)
            delays, sent = await trial(number, ports, checkers, delay)
            for label in checkers:
                results.delays[label].append(delays[label])
                results.queries[label].append(sent[label])
            print(
                f"  trial {number + 1:2d}  D={delay:5.2f} s  "
                + "  ".join(f"{label}: {delays[label] * 1000:6.1f} ms" for label in checkers),
                flush=True,
            )
    finally:
        for checker in checkers.values():
            await checker.close()
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> str:
    model = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {model}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--min-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--max-delay", type=float, default=2.0, help="seconds")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="FIRST,BACKOFF,CAP",
        help="another schedule to measure, e.g. 0.05,1.1,1 (repeatable)",
    )
    args = parser.parse_args()
    if shutil.which("knotd") is None:
        sys.exit("knotd not found: apt-get install -y knot")
    loop_factory = None
    if not args.no_uvloop:
        with suppress(ImportError):
            import uvloop  # noqa: PLC0415 - optional, as in the broker

            loop_factory = uvloop.new_event_loop
    print(f"machine: {machine()}; python {sys.version.split()[0]}; uvloop: {bool(loop_factory)}")
    print(f"{args.trials} trials, D uniform in [{args.min_delay:g}, {args.max_delay:g}] s")
    with (
        tempfile.TemporaryDirectory(prefix="propagation-bench-") as temp,
        knot(Path(temp) / "a") as first,
        knot(Path(temp) / "b") as second,
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        results = runner.run(measure([first, second], args))
    print(f"{'strategy':22} {'median':>9} {'p95':>9} {'max':>9} {'queries/trial':>14}")
    for label, delays in results.delays.items():
        print(
            f"{label:22} {statistics.median(delays) * 1000:7.1f}ms "
            f"{percentile(delays, 0.95) * 1000:7.1f}ms {max(delays) * 1000:7.1f}ms "
            f"{statistics.mean(results.queries[label]):14.1f}"
        )


if __name__ == "__main__":
    main()
