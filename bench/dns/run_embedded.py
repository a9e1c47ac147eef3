"""Serve the embedded example.test zone on one loopback port until SIGTERM or SIGINT.

Prints "<host> <port>" on stdout once listening; with --profile, writes cProfile stats
of the whole run to the given file at exit (of this process only: with --workers N > 1,
profile the workers with py-spy). --workers N serves from N worker processes sharing
the port through SO_REUSEPORT, as ``dns.workers = N`` does in the broker.

dnsperf sends every query from 127.0.0.1, so the broker's default rate limit (1000
responses/s per source network) would drop most of them. By default the limit is on at a
rate no benchmark reaches (``--rate-limit unreachable``): every datagram pays for the
check, none is limited. ``--rate-limit off`` runs without a limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal
import sys

try:
    import uvloop
except ImportError:
    uvloop = None

import dns.rcode
import dns.tsig
import dns.update

from broker.dnsserver import DnsServer
from broker.dnsserver.ratelimit import RateLimit
from broker.dnsserver.workers import DnsWorkers
from providers.embedded import EmbeddedProvider, EmbeddedSettings

ZONE = "example.test."
UNREACHABLE = RateLimit(responses_per_second=1e12, burst=1e12)


class NoKeys:
    """The signed-message path switched on, as in a broker (dns.update.enabled), with no
    keys: the benchmark measures queries with it in place."""

    fudge = 300.0

    async def key(self, name: str) -> dns.tsig.Key | None:
        return None

    async def apply(
        self, message: dns.update.UpdateMessage, key_name: str, source: str
    ) -> dns.rcode.Rcode:
        return dns.rcode.REFUSED

    def refused(self, source: str, key_name: str, why: str) -> None:
        """Nothing is audited here."""

    def report(self, outcome: str) -> None:
        pass


async def serve(
    host: str,
    port: int,
    txt: list[str],
    rate_limit: RateLimit | None,
    workers: int,
    reuseport: bool,
) -> None:
    provider = EmbeddedProvider("embedded", EmbeddedSettings())
    for value in txt:
        await provider.add_txt(ZONE, f"_acme-challenge.www.{ZONE}", value, 60)
    server: DnsServer | DnsWorkers
    if workers > 1:
        server = DnsWorkers(
            provider.zone_set,
            [(host, port)],
            workers,
            signers=NoKeys(),
            rate_limit=rate_limit,
            reuseport=reuseport,
        )
    else:
        server = DnsServer(
            provider.zone_set, [(host, port)], signers=NoKeys(), rate_limit=rate_limit
        )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound_host, bound_port = server.addresses[0]
    print(bound_host, bound_port, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        counts = {f"{t}/{r}": n for (t, r), n in server.query_counts().items() if n}
        print(f"answered: {counts}; limited: {server.rate_limited_counts()}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--txt", action="append", default=[], help="TXT value (repeatable)")
    parser.add_argument("--profile", help="write cProfile stats here")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--rate-limit", choices=["unreachable", "off"], default="unreachable")
    parser.add_argument(
        "--workers", type=int, default=1, help="DNS worker processes (dns.workers); 1: in-process"
    )
    parser.add_argument("--reuseport", action="store_true", help="dns.reuseport (workers)")
    args = parser.parse_args()
    run = asyncio.run if args.no_uvloop or uvloop is None else uvloop.run
    rate_limit = UNREACHABLE if args.rate_limit == "unreachable" else None
    txt = args.txt or ["bench-value"]
    coroutine = serve(args.host, args.port, txt, rate_limit, args.workers, args.reuseport)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, coroutine)
        profiler.dump_stats(args.profile)
    else:
        run(coroutine)


if __name__ == "__main__":
    main()
