"""Query rate of the embedded DNS server against Knot DNS, both driven by dnsperf.

Needs knotd and dnsperf on PATH (Debian: apt-get install -y knot dnsperf). Starts knotd
and bench/dns/run_embedded.py on free loopback ports, in fresh directories under one
temporary directory, serving the same example.test zone; runs dnsperf with the same
query file against each (with and without EDNS), prints queries/s and the ratio, and
stops both servers.

    .venv/bin/python bench/dns/bench.py [--seconds 10] [--knot-workers 1] [--no-pin]
        [--rate-limit-cost ROUNDS] [--workers N] [--rounds R] [--edns-only]

By default (with 2 or more CPUs) each server is pinned to the last CPU and dnsperf to
the others with taskset, so a single-threaded server is compared with a knot using one
UDP worker on one core. --no-pin --knot-workers 0 compares with knot's own defaults
(one UDP worker per CPU) and the scheduler free to place everything.

--workers N runs the embedded server with N DNS worker processes (``dns.workers``).
--rounds R runs knot and the embedded server R times each, alternating, and reports
the medians (a shared machine drifts). --edns-only runs only ``dnsperf -e``.

The embedded server runs with its UDP rate limit on at a rate dnsperf never reaches
(all its queries come from 127.0.0.1, which the default limit would throttle), so the
per-datagram check is in the figure. --rate-limit-cost N also runs it without a limiter,
in turns with it (N runs each), and prints the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import re
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
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
TXT_VALUE = "bench-value-0123456789abcdefghijklmnopqrstuvwxyz0123456"
QUERIES = [
    "_acme-challenge.www.example.test TXT",
    "example.test SOA",
    "missing.example.test TXT",
    "_acme-challenge.WWW.Example.test TXT",
    "nx-1.example.test A",
    "example.test NS",
    "www.example.test TXT",
    "_acme-challenge.nothing.example.test TXT",
]
ZONE_FILE = f"""$ORIGIN example.test.
$TTL 3600
@       SOA ns1 hostmaster 1 3600 600 604800 60
@       NS  ns1
ns1     A   127.0.0.1
_acme-challenge.www 60 TXT "{TXT_VALUE}"
"""
KNOT_CONF = """server:
    listen: {host}@{port}
    rundir: {dir}/run
{workers}    tcp-workers: 1
    background-workers: 1
database:
    storage: {dir}/db
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: {dir}
    file: "%s.zone"
zone:
  - domain: example.test
"""


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


def wait_until_answering(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    query = dns.message.make_query("example.test.", "SOA")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before answering")
        with suppress(dns.exception.Timeout, OSError):
            response = dns.query.udp(query, HOST, port=port, timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer on {HOST}:{port} within 15 s")


@contextmanager
def running(command: list[str], name: str, port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_until_answering(port, process, name)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pinning(no_pin: bool) -> tuple[list[str], list[str]]:
    """taskset prefixes for the servers (last CPU) and dnsperf (the other CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return [], []
    client = ",".join(map(str, cpus[:-1]))
    return ["taskset", "-c", str(cpus[-1])], ["taskset", "-c", client]


def dnsperf(
    port: int, queries: Path, args: argparse.Namespace, edns: bool, prefix: list[str]
) -> float:
    command = [*prefix, "dnsperf", "-s", HOST, "-p", str(port), "-d", str(queries)]
    command += [
        "-l",
        str(args.seconds),
        "-c",
        str(args.clients),
        "-q",
        str(args.outstanding),
        "-t",
        "2",
    ]
    if edns:
        command.append("-e")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    lost = re.search(r"Queries lost:\s+(\d+)", result.stdout)
    rate = re.search(r"Queries per second:\s+([\d.]+)", result.stdout)
    if rate is None:
        raise RuntimeError(f"no rate in dnsperf output:\n{result.stdout}\n{result.stderr}")
    if lost is not None and int(lost.group(1)):
        print(f"  dnsperf lost {lost.group(1)} queries", flush=True)
    return float(rate.group(1))


def modes(args: argparse.Namespace) -> tuple[bool, ...]:
    """Whether each dnsperf run sends EDNS."""
    return (True,) if args.edns_only else (False, True)


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
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--knot-workers", type=int, default=1, help="0: knot's default")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs with taskset")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--profile", help="cProfile the embedded server into this file")
    parser.add_argument("--workers", type=int, default=1, help="embedded DNS worker processes")
    parser.add_argument("--reuseport", action="store_true", help="workers bind SO_REUSEPORT")
    parser.add_argument("--rounds", type=int, default=1, help="alternate knot/embedded R times")
    parser.add_argument("--edns-only", action="store_true", help="only dnsperf -e")
    parser.add_argument(
        "--rate-limit-cost",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also run the embedded server without its rate limiter, in turns with it "
        "ROUNDS times each, and compare the medians",
    )
    args = parser.parse_args()
    for tool in ("knotd", "dnsperf"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y knot dnsperf")
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as temp:
        print(f"machine: {machine()}")
        print(f"dnsperf -l {args.seconds} -c {args.clients} -q {args.outstanding}", end="; ")
        print(
            f"knot udp-workers {args.knot_workers or 'default'}; pinned: {not args.no_pin}; "
            f"embedded workers {args.workers} (reuseport: {args.reuseport}); "
            f"rounds {args.rounds}; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        rates = measure(Path(temp), args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for edns in modes(args):
        embedded, knot = rates["embedded", edns], rates["knot", edns]
        label = "EDNS0" if edns else "no EDNS"
        print(
            f"{label:8} embedded {embedded:10.0f} q/s   knot {knot:10.0f} q/s   "
            f"ratio {embedded / knot:.2f}"
        )
        if args.rate_limit_cost:
            without = rates["embedded-no-rrl", edns]
            print(
                f"{label:8} embedded without rate limit {without:10.0f} q/s   "
                f"with/without (medians) {embedded / without:.3f}"
            )


def measure(temp: Path, args: argparse.Namespace) -> dict[tuple[str, bool], float]:
    knot_dir = temp / "knot"
    for sub in ("run", "db"):
        (knot_dir / sub).mkdir(parents=True)
    (knot_dir / "example.test.zone").write_text(ZONE_FILE)
    knot_port, embedded_port = free_port(), free_port()
    workers = f"    udp-workers: {args.knot_workers}\n" if args.knot_workers else ""
    conf = KNOT_CONF.format(host=HOST, port=knot_port, dir=knot_dir, workers=workers)
    (knot_dir / "knot.conf").write_text(conf)
    queries = temp / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n")
    server_prefix, client_prefix = pinning(args.no_pin)
    knot = [*server_prefix, "knotd", "-c", str(knot_dir / "knot.conf")]
    embedded = [*server_prefix, sys.executable, str(ROOT / "bench/dns/run_embedded.py")]
    embedded += ["--host", HOST, "--port", str(embedded_port), "--txt", TXT_VALUE]
    embedded += ["--workers", str(args.workers), *(["--reuseport"] if args.reuseport else [])]
    if args.profile:
        embedded += ["--profile", str(Path(args.profile).resolve())]
    os.environ["PYTHONPATH"] = str(ROOT)
    runs: dict[tuple[str, bool], list[float]] = {}
    servers = [("knot", knot, knot_port), ("embedded", embedded, embedded_port)] * args.rounds
    if args.rate_limit_cost:
        # with and without the limiter in turns, so drift on a shared machine hits both
        port = free_port()
        unlimited = [*embedded, "--rate-limit", "off"]
        unlimited[unlimited.index(str(embedded_port))] = str(port)
        turns = [("embedded-no-rrl", unlimited, port), ("embedded", embedded, embedded_port)]
        servers += turns * (args.rate_limit_cost - 1) + turns[:1]
    for name, command, port in servers:
        with running(command, name, port, temp / f"{name}.log"):
            for edns in modes(args):
                rate = dnsperf(port, queries, args, edns, client_prefix)
                runs.setdefault((name, edns), []).append(rate)
                print(
                    f"  {name:15} {'EDNS0' if edns else 'no EDNS':8} {rate:10.0f} q/s", flush=True
                )
    return {key: statistics.median(values) for key, values in runs.items()}


if __name__ == "__main__":
    main()
