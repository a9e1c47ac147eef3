"""The authenticated present path against a bare aiohttp handler, same machine, same run.

Each round drives, one after the other, a bare aiohttp handler and every broker under
test with the same wrk script (``pairs.lua``: a present then a cleanup of the same new
value, in turn on each connection), then measures each broker's latency at half the
throughput it reached (wrk's ``delay``: a fixed pace per connection). Brokers run
``dns01-broker serve`` on the embedded provider and a SQLite store, logging warnings
only, with rate limits off (wrk sends thousands of requests a second with one token).

    .venv/bin/python bench/present/bench.py                 # 3 rounds of 10 s, 64 connections
    .venv/bin/python bench/present/bench.py --audit-off     # + a broker with audit off
    .venv/bin/python bench/present/bench.py --source DIR    # + the broker of another checkout
    .venv/bin/python bench/present/bench.py --quick         # 1 round of 2 s (CI)

The floor is the bare handler plus what no broker can skip: the bearer token's hash
compared in constant time and one SQLite WAL write committed per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.peers import free_port  # noqa: E402 - the tests' helpers

HERE = Path(__file__).parent
PAIRS = HERE / "pairs.lua"
BARE = HERE / "bare_aiohttp.py"


@dataclass
class Target:
    """One server under load: its label, how to start it, and what it measured."""

    label: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    token: str = "unused"
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    paced: list[tuple[float, float, float]] = field(default_factory=list)
    cpu_per_request: list[float] = field(default_factory=list)
    """The server's CPU seconds (user + system) per request at full load."""
    errors: int = 0


def broker_config(work: Path, name: str, audit: bool) -> tuple[Path, int]:
    port = free_port()
    config = work / f"{name}.toml"
    config.write_text(
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        "[http.rate_limit]\naddress_rate = 0\ntoken_rate = 0\n"
        '[dns]\nlisten = ["127.0.0.1:0"]\n'
        f'[store]\nurl = "sqlite:///{work}/{name}.db"\n'
        f'[auth]\nbootstrap_token_file = "{work}/{name}.admin"\n'
        '[challenges]\nmax_lease = "7d"\n'
        f"[audit]\nenabled = {'true' if audit else 'false'}\n"
        '[log]\nlevel = "WARNING"\n'
    )
    return config, port


async def broker(work: Path, label: str, source: Path, audit: bool = True) -> Target:
    """A broker running the code of checkout ``source`` (this venv's packages)."""
    name = re.sub(r"\W+", "-", label)
    config, port = broker_config(work, name, audit)
    env = {"PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "broker", "--config", str(config)]
    token = await output(*command, "token", "create", "--name", "bench",
                         "--allow", "*.example.test", env=env)  # fmt: skip
    return Target(label, [*command, "serve"], env, f"http://127.0.0.1:{port}", token)


async def output(*argv: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode()}")
    return out.decode().strip()


async def listening(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens at {url}")


async def wrk(
    target: Target, seconds: float, connections: int, pace: float = 0
) -> dict[str, float]:
    """One wrk run; ``pace`` (requests/s over all connections, 0: as fast as it goes)."""
    env = {
        **os.environ,
        "BENCH_TOKEN": target.token,
        "BENCH_PREFIX": f"x{os.urandom(4).hex()}",
        "BENCH_DELAY_MS": f"{connections / pace * 1000:.3f}" if pace else "0",
    }
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(PAIRS), target.url + "/",
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out = (await process.communicate())[0].decode()
    found = re.search(r"RESULT (.*)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no result: {out}")
    return {k: float(v) for k, v in (kv.split("=") for kv in found.group(1).split())}


async def run_round(targets: list[Target], seconds: float, connections: int) -> None:
    for target in targets:
        process = await asyncio.create_subprocess_exec(
            *target.command, env={**os.environ, **target.env}, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await listening(target.url)
            before = cpu_seconds(process.pid)
            result = await wrk(target, seconds, connections)
            target.cpu_per_request.append((cpu_seconds(process.pid) - before) / result["requests"])
            target.rates.append(result["rps"])
            target.p99s.append(result["p99_ms"])
            target.errors += int(result["errors"])
            if target.token != "unused":
                half = await wrk(target, seconds, connections, pace=result["rps"] / 2)
                target.paced.append((half["rps"], half["p50_ms"], half["p99_ms"]))
                target.errors += int(half["errors"])
        finally:
            process.terminate()
            await process.wait()


def report(targets: list[Target], args: argparse.Namespace) -> None:
    bare = statistics.median(targets[0].rates)
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.rounds} round(s), "
          "present+cleanup pairs (requests/s counts each request)")  # fmt: skip
    print()
    print("| server | req/s (median) | ratio to bare | CPU µs per request | p99 at full load | "
          "req/s at half load | p50 / p99 at half load | errors |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for target in targets:
        rate = statistics.median(target.rates)
        full_p99 = statistics.median(target.p99s)
        if target.paced:
            paced_rate = statistics.median(p[0] for p in target.paced)
            p50 = statistics.median(p[1] for p in target.paced)
            p99 = statistics.median(p[2] for p in target.paced)
            half = f"{paced_rate:,.0f} | {p50:.1f} ms / {p99:.1f} ms"
        else:
            half = "- | -"
        cpu = statistics.median(target.cpu_per_request) * 1e6
        print(f"| {target.label} | {rate:,.0f} | {rate / bare:.2f} | {cpu:.0f} | "
              f"{full_p99:.1f} ms | {half} | {target.errors} |")  # fmt: skip
    print()
    bare_rates = targets[0].rates
    rounds = [
        f"{t.label} " + " ".join(f"{r / b:.2f}" for r, b in zip(t.rates, bare_rates, strict=True))
        for t in targets[1:]
    ]
    print("per round, ratio to bare: " + "; ".join(rounds))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat): per request, a
    figure far less disturbed by other load on the machine than requests per second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 2 s")
    parser.add_argument("--audit-off", action="store_true", help="add a broker without audit")
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="add a broker running another checkout's code")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2, 1
    if shutil.which("wrk") is None:
        print("wrk is not installed (make bench installs it)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-present-"))
    try:
        port = free_port()
        bare_url = f"http://127.0.0.1:{port}"
        floor_port = free_port()
        floor = [sys.executable, str(BARE), str(floor_port), "--floor", str(work / "floor.db")]
        targets = [
            Target("bare aiohttp", [sys.executable, str(BARE), str(port)], url=bare_url),
            Target(
                "floor: bare + token hash + SQLite write",
                [*floor, "floor-token"],
                url=f"http://127.0.0.1:{floor_port}",
                token="floor-token",
            ),
            await broker(work, "broker", ROOT),
        ]
        if args.audit_off:
            targets.append(await broker(work, "broker, audit off", ROOT, audit=False))
        for source in args.source:
            targets.append(await broker(work, f"broker at {source}", source.resolve()))
        for _ in range(args.rounds):
            await run_round(targets, args.seconds, args.connections)
        report(targets, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
