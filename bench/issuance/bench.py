"""Issuance wall time: broker.acme against Debian's lego (httpreq face), same run.

One broker (embedded DNS on loopback) and one pebble (PEBBLE_VA_NOSLEEP=1, no nonce
rejection, validating dns-01 against the broker's DNS) serve every trial. A trial issues
a certificate for ``*.example.test`` + ``example.test`` from scratch: a new account key
and account, a new certificate key (ECDSA P-256 for both clients), the order, both
dns-01 challenges through the broker, finalize, download. The two clients alternate,
so both see the same machine state.

    .venv/bin/python bench/issuance/bench.py                  # 5 trials each
    .venv/bin/python bench/issuance/bench.py --trials 11
    .venv/bin/python bench/issuance/bench.py --no-lego --trials 20 --profile /tmp/acme.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from broker.acme import (  # noqa: E402
    AcmeClient,
    AcmeEvent,
    BrokerApiSolver,
    generate_account_key,
    issue,
)
from broker.auth import issue_token  # noqa: E402
from broker.config import load_settings  # noqa: E402
from broker.runtime import Broker  # noqa: E402
from tests.peers import Pebble  # noqa: E402

NAMES = ["*.example.test", "example.test"]
CONFIG = """
[http]
listen = "127.0.0.1:0"
[dns]
listen = ["127.0.0.1:0"]
[store]
url = "sqlite:///{state}/broker.db"
[auth]
bootstrap_token_file = "{state}/admin.token"
[log]
level = "warning"
"""


async def start_broker(directory: Path) -> Broker:
    config = directory / "broker.toml"
    config.write_text(CONFIG.format(state=directory))
    broker = Broker(load_settings(config, {}))
    await broker.start()
    return broker


async def token(broker: Broker, name: str) -> str:
    issued = issue_token(name, ["example.test", "*.example.test"], cidrs=[], lifetime=None)
    await broker.store.create_token(issued.record)
    return issued.secret


async def ours(pebble: Pebble, broker_url: str, secret: str) -> tuple[float, dict[str, float]]:
    """Seconds for one issuance, and seconds from the start to each kind of event."""
    marks: dict[str, float] = {}
    start = time.monotonic()

    def note(event: AcmeEvent) -> None:
        marks[event.kind.value] = event.at - start

    async with (
        AcmeClient(pebble.url, generate_account_key(), ssl=pebble.ssl_context()) as client,
        BrokerApiSolver(broker_url, secret) as solver,
    ):
        await client.new_account(contact=["mailto:ops@example.test"])
        marks["account"] = time.monotonic() - start
        await issue(client, NAMES, solver, on_event=note)
    return time.monotonic() - start, marks


async def lego(pebble: Pebble, broker: Broker, secret: str, path: Path) -> float:
    assert broker.dns_server is not None
    host, port = broker.dns_server.addresses[0]
    env = {
        **os.environ,
        "LEGO_CA_CERTIFICATES": str(pebble.ca_file),
        "HTTPREQ_ENDPOINT": broker.http_url,
        "HTTPREQ_USERNAME": "lego",
        "HTTPREQ_PASSWORD": secret,
    }
    argv = [
        "lego", "--server", pebble.url, "--accept-tos", "--email", "ops@example.test",
        "--path", str(path), "--key-type", "ec256", "--dns", "httpreq",
        "--dns.resolvers", f"{host}:{port}", "--dns.disable-cp",
        *(arg for name in NAMES for arg in ("-d", name)), "run",
    ]  # fmt: skip
    start = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    elapsed = time.monotonic() - start
    if process.returncode != 0:
        raise RuntimeError(f"lego failed:\n{output.decode(errors='replace')}")
    return elapsed


def summary(label: str, times: list[float]) -> str:
    spread = f"min {min(times):.3f}  max {max(times):.3f}"
    return f"{label:<14} median {statistics.median(times):7.3f} s   {spread}   n={len(times)}"


async def measure(args: argparse.Namespace, work: Path) -> None:
    broker = await start_broker(work)
    assert broker.dns_server is not None
    (work / "pebble").mkdir()
    pebble = Pebble(work / "pebble", broker.dns_server.addresses[0])
    try:
        await pebble.start()
        ours_secret, lego_secret = await token(broker, "acme"), await token(broker, "lego")
        await ours(pebble, broker.http_url, ours_secret)  # warm-up, not counted
        times: dict[str, list[float]] = defaultdict(list)
        phases: dict[str, list[float]] = defaultdict(list)
        profile = cProfile.Profile() if args.profile else None
        for trial in range(args.trials):
            if profile:
                profile.enable()
            elapsed, marks = await ours(pebble, broker.http_url, ours_secret)
            if profile:
                profile.disable()
            times["broker.acme"].append(elapsed)
            for name, at in marks.items():
                phases[name].append(at)
            if not args.no_lego:
                times["lego"].append(
                    await lego(pebble, broker, lego_secret, work / f"lego-{trial}")
                )
            print(
                f"trial {trial + 1}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items())
            )
        report(times, phases)
        if profile:
            profile.dump_stats(args.profile)
            print(f"profile written to {args.profile}")
    finally:
        await pebble.stop()
        await broker.stop()


def report(times: dict[str, list[float]], phases: dict[str, list[float]]) -> None:
    print()
    for label, values in times.items():
        print(summary(label, values))
    if "lego" in times:
        ratio = statistics.median(times["broker.acme"]) / statistics.median(times["lego"])
        print(f"ratio broker.acme / lego (medians): {ratio:.3f}")
    print("\nbroker.acme: median seconds from the start to the last event of each kind")
    for name, values in sorted(phases.items(), key=lambda item: statistics.median(item[1])):
        print(f"  {name:<24} {statistics.median(values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--no-lego", action="store_true", help="measure broker.acme only")
    parser.add_argument("--profile", metavar="FILE", help="cProfile broker.acme's trials")
    args = parser.parse_args()
    for binary in ("pebble", "openssl", *(() if args.no_lego else ("lego",))):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} not found: apt-get install -y pebble lego openssl")
    with tempfile.TemporaryDirectory(prefix="bench-issuance-") as work:
        asyncio.run(measure(args, Path(work)))


if __name__ == "__main__":
    main()
