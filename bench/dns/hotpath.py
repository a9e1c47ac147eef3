"""CPU per UDP datagram on the server's hot path, with and without the rate-limit check.

dnsperf against a live server (bench.py) measures the whole path, syscalls included, and
on a shared machine its figures move by tens of percent between runs, which hides a
cost of a few percent. This runs what ``UdpListener`` does per datagram in process, no
sockets: ``Responder.respond`` on the benchmark's queries (cached answers), alone and
preceded by ``RateLimiter.check`` (sources spread over 256 networks, a rate no run
reaches), in alternating rounds, and reports the fastest round of each (the least
disturbed) and their ratio.

    .venv/bin/python bench/dns/hotpath.py [--rounds 15] [--queries 200000]
"""

from __future__ import annotations

import argparse
import time

import dns.message

from bench import QUERIES, TXT_VALUE  # bench/dns/bench.py, beside this script
from broker.dnsserver.ratelimit import RateLimit, RateLimiter
from broker.dnsserver.responder import Responder
from providers.embedded import EmbeddedProvider, EmbeddedSettings

ZONE = "example.test."


def packets() -> list[bytes]:
    out = []
    for line in QUERIES:
        name, rdtype = line.split()
        for use_edns in (None, 0):
            out.append(dns.message.make_query(name, rdtype, use_edns=use_edns).to_wire())
    return out


def responder() -> Responder:
    provider = EmbeddedProvider("embedded", EmbeddedSettings())
    provider.zone_set.zones()[0].add_txt(f"_acme-challenge.www.{ZONE}", TXT_VALUE, 60)
    return Responder(provider.zone_set, 1232, 10000)


def plain(respond: Responder, work: list[tuple[bytes, str]]) -> float:
    answer = respond.respond
    start = time.perf_counter()
    for data, _ in work:
        answer(data, True)
    return time.perf_counter() - start


def limited(respond: Responder, limiter: RateLimiter, work: list[tuple[bytes, str]]) -> float:
    answer, check, now = respond.respond, limiter.check, time.monotonic()
    start = time.perf_counter()
    for data, host in work:
        if not check(host, now):
            answer(data, True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--queries", type=int, default=200_000)
    args = parser.parse_args()
    queries = packets()
    hosts = [f"198.51.{index}.7" for index in range(256)]
    work = [(queries[i % len(queries)], hosts[i % len(hosts)]) for i in range(args.queries)]
    server = responder()
    limiter = RateLimiter(RateLimit(responses_per_second=1e12, burst=1e12))
    best_plain = best_limited = float("inf")
    for _ in range(args.rounds):
        best_plain = min(best_plain, plain(server, work))
        best_limited = min(best_limited, limited(server, limiter, work))
    per = 1e9 / args.queries
    print(f"respond alone          {best_plain * per:7.0f} ns/datagram")
    print(f"check + respond        {best_limited * per:7.0f} ns/datagram")
    print(f"throughput with/without {best_plain / best_limited:.3f}")


if __name__ == "__main__":
    main()
