"""Serve the embedded example.test zone on one loopback port until SIGTERM or SIGINT.

Prints "<host> <port>" on stdout once listening; with --profile, writes cProfile stats
of the whole run to the given file at exit.
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
from providers.embedded import EmbeddedProvider, EmbeddedSettings

ZONE = "example.test."


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

    def report(self, outcome: str) -> None:
        pass


async def serve(host: str, port: int, txt: list[str]) -> None:
    provider = EmbeddedProvider("embedded", EmbeddedSettings())
    for value in txt:
        await provider.add_txt(ZONE, f"_acme-challenge.www.{ZONE}", value, 60)
    server = DnsServer(provider.zone_set, [(host, port)], signers=NoKeys())
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
        counts = {f"{t}/{r}": n for (t, r), n in server.query_counts().items() if n}
        print(f"answered: {counts}", file=sys.stderr)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--txt", action="append", default=[], help="TXT value (repeatable)")
    parser.add_argument("--profile", help="write cProfile stats here")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    run = asyncio.run if args.no_uvloop or uvloop is None else uvloop.run
    coroutine = serve(args.host, args.port, args.txt or ["bench-value"])
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, coroutine)
        profiler.dump_stats(args.profile)
    else:
        run(coroutine)


if __name__ == "__main__":
    main()
