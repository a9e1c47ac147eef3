"""Response-rate limiting over UDP: buckets per source network, slip, bounded table,
TCP untouched, its settings and its metric."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest

from broker.config import ConfigError, load_settings
from broker.dnsserver import DnsServer
from broker.dnsserver.ratelimit import ANSWER, DROP, SLIP, RateLimit, RateLimiter
from broker.metrics import Metrics
from providers.embedded import EmbeddedProvider
from tests.broker.dnsserver.support import TIMEOUT, ZONE, Client
from tests.support import Running, write_settings

# A rate so low that no token comes back while a test runs: what a test sees is the burst.
NEVER_REFILLS = 0.001


def verdicts(limiter: RateLimiter, host: str, count: int, now: float = 0.0) -> list[int]:
    return [limiter.check(host, now) for _ in range(count)]


def test_a_source_gets_its_burst_then_every_slip_th_answer_truncated() -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=NEVER_REFILLS, burst=3, slip=2))
    assert verdicts(limiter, "192.0.2.7", 7) == [
        *[ANSWER] * 3,
        DROP,
        SLIP,
        DROP,
        SLIP,
    ]
    assert (limiter.dropped, limiter.slipped) == (2, 2)


@pytest.mark.parametrize(("slip", "expected"), [(0, DROP), (1, SLIP)])
def test_slip_zero_drops_every_limited_response_and_one_truncates_each(
    slip: int, expected: int
) -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=NEVER_REFILLS, burst=1, slip=slip))
    assert verdicts(limiter, "192.0.2.7", 4) == [ANSWER, *[expected] * 3]


def test_tokens_come_back_at_the_configured_rate_up_to_the_burst() -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=10, burst=2, slip=0))
    assert verdicts(limiter, "192.0.2.7", 3, now=100.0) == [ANSWER] * 2 + [DROP]
    assert verdicts(limiter, "192.0.2.7", 2, now=100.15) == [ANSWER, DROP]
    # an hour idle refills to the burst, not beyond
    assert verdicts(limiter, "192.0.2.7", 3, now=3700.0) == [ANSWER] * 2 + [DROP]


@pytest.mark.parametrize(
    ("first", "same_network", "other_network"),
    [
        ("192.0.2.7", "192.0.2.250", "192.0.3.7"),
        ("2001:db8:0:ab00::1", "2001:db8:0:abff:ffff::9", "2001:db8:0:ac00::1"),
        ("::ffff:192.0.2.7", "192.0.2.9", "::ffff:192.0.3.7"),
        ("fe80::1%lo", "fe80::2", "fe80:0:0:100::1"),
    ],
)
def test_sources_share_a_bucket_per_ipv4_24_and_ipv6_56(
    first: str, same_network: str, other_network: str
) -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=NEVER_REFILLS, burst=1, slip=0))
    assert limiter.check(first, 0.0) == ANSWER
    assert limiter.check(same_network, 0.0) == DROP
    assert limiter.check(other_network, 0.0) == ANSWER


def test_prefix_lengths_are_configurable() -> None:
    limiter = RateLimiter(
        RateLimit(responses_per_second=NEVER_REFILLS, burst=1, ipv4_prefix=32, ipv6_prefix=128)
    )
    assert limiter.check("192.0.2.7", 0.0) == ANSWER
    assert limiter.check("192.0.2.8", 0.0) == ANSWER
    assert limiter.check("2001:db8::1", 0.0) == ANSWER
    assert limiter.check("2001:db8::2", 0.0) == ANSWER
    assert limiter.check("2001:db8::2", 0.0) != ANSWER


def test_ipv4_and_ipv6_networks_never_share_a_bucket() -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=NEVER_REFILLS, burst=1, ipv6_prefix=128))
    assert limiter.check("0.0.0.1", 0.0) == ANSWER
    assert limiter.check("::1", 0.0) == ANSWER
    assert limiter.check("::", 0.0) == ANSWER


def test_forged_sources_cannot_grow_the_table_beyond_its_cap() -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=NEVER_REFILLS, burst=1, max_sources=100))
    for index in range(5000):
        assert limiter.check(f"10.{index >> 8 & 255}.{index & 255}.1", 0.0) == ANSWER
        assert len(limiter) <= 100
    # the busiest recent source is still limited after the churn
    assert limiter.check("10.19.135.1", 0.0) == DROP


def test_refilled_buckets_are_forgotten_first_when_the_table_is_full() -> None:
    limiter = RateLimiter(RateLimit(responses_per_second=1, burst=1, max_sources=4))
    limiter.check("192.0.2.1", 0.0)  # refilled by t=10
    for host in ("192.0.3.1", "192.0.4.1", "192.0.5.1"):
        limiter.check(host, 9.5)
    limiter.check("192.0.6.1", 10.0)
    assert len(limiter) == 4
    assert limiter.check("192.0.3.1", 10.0) != ANSWER


def test_invalid_limits_are_refused_with_every_problem() -> None:
    with pytest.raises(ValueError, match="responses_per_second=0") as raised:
        RateLimit(responses_per_second=0, burst=0, slip=-1, ipv4_prefix=33)
    for word in ("burst=0", "slip=-1", "ipv4_prefix=33"):
        assert word in str(raised.value)


@pytest.fixture
async def limited(provider: EmbeddedProvider) -> AsyncIterator[tuple[DnsServer, Client]]:
    limit = RateLimit(responses_per_second=NEVER_REFILLS, burst=4, slip=2)
    server = DnsServer(provider.zone_set, [("127.0.0.1", 0)], rate_limit=limit)
    await server.start()
    try:
        host, port = server.addresses[0]
        yield server, Client(host, port)
    finally:
        await server.stop()


async def test_over_the_limit_udp_answers_are_dropped_or_minimal_truncated(
    limited: tuple[DnsServer, Client],
) -> None:
    server, client = limited
    queries = [dns.message.make_query(ZONE, "SOA", use_edns=edns) for edns in [None, 0] * 8]
    replies = await client.raw_udp_many([q.to_wire() for q in queries], wait=0.5)
    parsed = [dns.message.from_wire(reply) for reply in replies]
    full = [r for r in parsed if not r.flags & dns.flags.TC]
    slipped = [r for r in parsed if r.flags & dns.flags.TC]
    assert len(full) == 4
    assert all(r.answer for r in full)
    assert len(slipped) == 6  # 12 over the limit, every 2nd truncated
    ids = {q.id: q for q in queries}
    for reply in slipped:
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == reply.authority == reply.additional == []
        assert reply.question == ids[reply.id].question
        assert reply.flags & dns.flags.QR
    assert server.rate_limited_counts() == {"dropped": 6, "slipped": 6}


async def test_a_resolver_told_to_retry_gets_the_answer_over_tcp(
    limited: tuple[DnsServer, Client],
) -> None:
    _, client = limited
    query = dns.message.make_query(ZONE, "NS")
    answered_over_tcp = 0
    for _ in range(12):
        try:
            response, used_tcp = await dns.asyncquery.udp_with_fallback(
                query, client.host, port=client.port, timeout=0.3
            )
        except dns.exception.Timeout:
            continue  # dropped
        assert response.rcode() == dns.rcode.NOERROR
        assert response.answer
        answered_over_tcp += used_tcp
    assert answered_over_tcp >= 3


async def test_tcp_is_never_rate_limited(limited: tuple[DnsServer, Client]) -> None:
    server, client = limited
    for _ in range(20):
        response = await client.tcp(dns.message.make_query(ZONE, "SOA"))
        assert response.answer
    assert server.rate_limited_counts() == {"dropped": 0, "slipped": 0}


async def test_without_a_limit_every_udp_query_is_answered(client: Client) -> None:
    queries = [dns.message.make_query(ZONE, "SOA").to_wire() for _ in range(100)]
    replies = await client.raw_udp_many(queries, wait=TIMEOUT, expected=len(queries))
    assert len(replies) == 100


async def test_the_metric_counts_dropped_and_slipped_responses(
    limited: tuple[DnsServer, Client],
) -> None:
    server, client = limited
    metrics = Metrics()
    metrics.watch_dns(server.query_counts, server.rate_limited_counts)
    packets = [dns.message.make_query(ZONE, "SOA").to_wire() for _ in range(10)]
    await client.raw_udp_many(packets, wait=0.5)
    text = metrics.render().decode()
    assert 'dns01_broker_dns_rate_limited_responses_total{action="dropped"} 3.0' in text
    assert 'dns01_broker_dns_rate_limited_responses_total{action="slipped"} 3.0' in text


def test_rate_limit_is_on_by_default_and_configurable(tmp_path: Path) -> None:
    default = load_settings(None, {}).dns.rate_limit.limit()
    assert default == RateLimit()
    path = tmp_path / "broker.toml"
    path.write_text(
        "[dns.rate_limit]\nresponses_per_second = 50\nburst = 10\nslip = 0\nipv6_prefix = 64\n"
    )
    limit = load_settings(path, {}).dns.rate_limit.limit()
    assert limit == RateLimit(responses_per_second=50, burst=10, slip=0, ipv6_prefix=64)
    env = {"DNS01_BROKER_DNS__RATE_LIMIT__ENABLED": "false"}
    assert load_settings(None, env).dns.rate_limit.limit() is None


def test_bad_rate_limit_settings_name_their_key(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text("[dns.rate_limit]\nresponses_per_second = 0\nipv4_prefix = 40\nwindow = 5\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    keys = {key for key, _ in raised.value.problems}
    assert {
        "dns.rate_limit.responses_per_second",
        "dns.rate_limit.ipv4_prefix",
        "dns.rate_limit.window",
    } <= keys


async def test_a_broker_limits_udp_as_configured_and_reports_it_in_metrics(
    start_broker: Callable[..., Awaitable[Running]], tmp_path: Path
) -> None:
    settings = write_settings(
        tmp_path, "[dns.rate_limit]\nresponses_per_second = 0.001\nburst = 2\nslip = 1\n"
    )
    running = await start_broker(settings)
    assert running.broker.dns_server is not None
    client = Client(*running.broker.dns_server.addresses[0])
    packets = [dns.message.make_query(ZONE, "SOA").to_wire() for _ in range(6)]
    replies = [dns.message.from_wire(r) for r in await client.raw_udp_many(packets, wait=0.5)]
    assert [bool(r.flags & dns.flags.TC) for r in replies] == [False, False, True, True, True, True]
    assert (await running.query(ZONE, "SOA", tcp=True)).answer
    _, metrics, _ = await running.call("GET", "/metrics")
    assert 'dns01_broker_dns_rate_limited_responses_total{action="slipped"} 4.0' in metrics
