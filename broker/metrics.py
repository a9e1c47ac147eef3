"""Every Prometheus collector of the broker, declared once, in a registry per broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _DnsQueryCollector(Collector):
    """Reads the DNS server's plain counters at scrape time (nothing on the hot path)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[tuple[str, str], int]] | None = None
        self.limited: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "dns01_broker_dns_queries",
            "DNS queries answered by the embedded server, by transport and response code",
            labels=["transport", "rcode"],
        )
        if self.source is not None:
            for (transport, rcode), count in sorted(self.source().items()):
                family.add_metric([transport, rcode], count)
        yield family
        limited = CounterMetricFamily(
            "dns01_broker_dns_rate_limited_responses",
            "UDP responses withheld by the DNS rate limit, by action (dropped, or slipped: "
            "sent as a bare truncated answer)",
            labels=["action"],
        )
        if self.limited is not None:
            for action, count in sorted(self.limited().items()):
                limited.add_metric([action], count)
        yield limited


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "dns01_broker_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.operation_seconds = Histogram(
            "dns01_broker_challenge_operation_seconds",
            "Time to serve a present or cleanup, store and provider included",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.live_records = Gauge(
            "dns01_broker_live_records",
            "Challenge TXT values currently present",
            registry=self.registry,
        )
        self.challenge_events = Counter(
            "dns01_broker_challenge_events",
            "Challenge records presented, removed by cleanup, or expired",
            ["event"],
            registry=self.registry,
        )
        self.propagation_seconds = Histogram(
            "dns01_broker_propagation_seconds",
            "From the start of a propagation wait to every authoritative server serving the value",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.propagation_checks = Counter(
            "dns01_broker_propagation_checks",
            "Propagation waits and checks by outcome (ready, not_ready, timeout, error)",
            ["outcome"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "dns01_broker_leader",
            "1 while this replica leads (expires leases, resumes orders), else 0",
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "dns01_broker_certificate_expiry_seconds",
            "When each certificate the broker keeps renewed expires (Unix time; on the leader)",
            ["order", "name"],
            registry=self.registry,
        )
        self.certificate_renewals = Counter(
            "dns01_broker_certificate_renewals",
            "Renewals of kept certificates by outcome (renewed, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.store_changes = Counter(
            "dns01_broker_store_changes",
            "Changes other replicas made, applied here, by kind (txt, token, registration, resync)",
            ["kind"],
            registry=self.registry,
        )
        self.dns_updates = Counter(
            "dns01_broker_dns_updates",
            "RFC 2136 updates by outcome (applied, refused, unsigned, BADKEY, BADSIG, BADTIME, "
            "malformed)",
            ["outcome"],
            registry=self.registry,
        )
        self.provider_retries = Counter(
            "dns01_broker_provider_retries",
            "Provider calls tried again after a throttled, failed or unanswered try",
            ["provider", "operation"],
            registry=self.registry,
        )
        self.provider_circuit = Gauge(
            "dns01_broker_provider_circuit_state",
            "Each provider's circuit breaker: 0 closed, 1 half open (probing), 2 open",
            ["provider"],
            registry=self.registry,
        )
        self.unfinished_changes = Counter(
            "dns01_broker_unfinished_changes",
            "Provider changes left unfinished (by a crash or a failure) and finished later, "
            "by intent (add, remove)",
            ["intent"],
            registry=self.registry,
        )
        self.audit_dropped = Counter(
            "dns01_broker_audit_events_dropped",
            "Audit events dropped because the queue of events waiting to be written was full",
            registry=self.registry,
        )
        self._dns = _DnsQueryCollector()
        self.registry.register(self._dns)

    def watch_dns(
        self,
        source: Callable[[], Mapping[tuple[str, str], int]],
        limited: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._dns.source = source
        self._dns.limited = limited

    def render(self) -> bytes:
        return generate_latest(self.registry)
