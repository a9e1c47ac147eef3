"""One running broker: store, providers, service, DNS listeners, HTTP API, reconciler.

Started and stopped as a unit by ``dns01-broker serve`` and by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
from aiohttp import web

from broker import audit
from broker.acmedns import AcmeDnsAccounts
from broker.api import ApiContext, RegistrationPolicy, build_app
from broker.api.limits import RequestLimits
from broker.api.server import GuardedAppRunner
from broker.api.tls import ReloadingTls, TlsConfigError
from broker.audit import AuditLog
from broker.auth import Authenticator, issue_token
from broker.certificates import CertificateService
from broker.config import ConfigError, Settings, acmedns_zone
from broker.delegation import DelegationResolver
from broker.dnsserver import DnsServer
from broker.dnsserver.workers import DnsWorkers
from broker.dnsupdate import UpdateFace
from broker.errors import (
    BrokerError,
    ConflictError,
    ProviderFailureError,
    StoreUnavailableError,
)
from broker.metrics import Metrics
from broker.oidc.verify import EXCHANGED_PREFIX, OidcVerifier
from broker.propagation import PropagationChecker
from broker.reconciler import Reconciler
from broker.replicas import ReplicaSync
from broker.secretbox import SecretBox
from broker.service import ChallengeService, ZoneRouter
from broker.store import Store
from broker.store.sqlite import SqliteStore
from broker.watch import PropagationWatch
from providers import load_provider_type
from providers.base import DnsProvider, ProviderError
from providers.embedded import (
    EmbeddedProvider,
    EmbeddedSettings,
    EmbeddedZone,
    EmbeddedZoneSettings,
    ZoneSet,
)
from providers.faults import FaultyProvider
from providers.resilience import BreakerState, ResilientProvider

log = logging.getLogger(__name__)

READINESS_TIMEOUT = 1.0
PROVIDER_CHECK_TIMEOUT = 5.0
PROVIDER_CHECK_TTL = 30.0
BOOTSTRAP_TOKEN_NAME = "admin"  # noqa: S105 - a token's name, not its secret


def secret_box(settings: Settings) -> SecretBox:
    key = settings.auth.secret_key
    return SecretBox(None if key is None else key.get_secret_value())


def open_store(settings: Settings) -> Store:
    """The configured store, not yet opened."""
    store = settings.store
    if store.is_sqlite:
        return SqliteStore(store.sqlite_path)
    try:
        from broker.store.postgres import PostgresStore  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise StoreUnavailableError(
            f"a PostgreSQL store needs the postgres extra: pip install 'dns01-broker[postgres]' "
            f"({exc})"
        ) from None
    password = None if store.password is None else store.password.get_secret_value()
    return PostgresStore(
        store.url.get_secret_value(), password, pool_size=store.pool_size, timeout=store.timeout
    )


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.zone_set = ZoneSet()
        self.store = open_store(settings)
        self.providers: dict[str, DnsProvider] = {}
        self.dns_server: DnsServer | DnsWorkers | None = None
        self._runner: web.AppRunner | None = None
        self._reconciler_task: asyncio.Task[None] | None = None
        self.service: ChallengeService | None = None
        self.delegation: DelegationResolver | None = None
        self.acmedns: AcmeDnsAccounts | None = None
        self.checker: PropagationChecker | None = None
        self._provider_health = ProviderHealth()
        self.watch: PropagationWatch | None = None
        self.certificates: CertificateService | None = None
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.replica_sync: ReplicaSync | None = None
        self.reconciler: Reconciler | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.audit: AuditLog | None = None
        self.oidc: OidcVerifier | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.store.open()
        if self.settings.audit.enabled:
            self.audit = AuditLog(
                self.store,
                self.metrics,
                retention=self.settings.audit.retention,
                queue_size=self.settings.audit.queue_size,
            )
            self.audit.start()
        if self.settings.oidc.issuers:
            self.oidc = OidcVerifier(self.settings.oidc, self.audit)
        for name, provider_settings in self.settings.provider_settings().items():
            provider = self._make_provider(name, provider_settings)
            try:
                await provider.open()
            except ProviderError as exc:
                await provider.close()
                raise ProviderFailureError(
                    f"provider {name!r} could not start: {exc}",
                    provider=name,
                    retryable=exc.retryable,
                ) from exc
            self.providers[name] = provider
        router = ZoneRouter(self.providers)
        self.delegation = DelegationResolver(
            self.zone_set, router.zones, resolvers=self.settings.propagation.resolver_addresses()
        )
        self.service = ChallengeService(
            self.store,
            router,
            self.settings.challenges,
            self.metrics,
            delegation=self.delegation,
        )
        self.service.audit = self.audit
        began = time.perf_counter()
        restored = await self.service.restore()
        log.info(
            "restored %d live challenge record(s) in %.3f s",
            restored,
            time.perf_counter() - began,
        )
        await self._bootstrap_admin_token()
        zone = acmedns_zone(self.settings)
        if zone is not None:
            hash_key = self.settings.acmedns.hash_key
            self.acmedns = AcmeDnsAccounts(
                self.store,
                self.service,
                self.zone_set,
                zone,
                hash_key=None if hash_key is None else hash_key.get_secret_value(),
            )
            await self.acmedns.open()
        feed = self.store.changes()
        if feed is not None:
            self.replica_sync = ReplicaSync(
                self.service,
                feed,
                self.providers,
                self.acmedns,
                self.metrics,
                txt_ttl=self.settings.challenges.txt_ttl,
            )
            self._sync_task = asyncio.create_task(self.replica_sync.run(), name="replica-sync")
            if not await self.replica_sync.wait_loaded(self.settings.store.timeout):
                log.warning("starting before the embedded zones could be loaded from the store")
        if self.settings.dns.enabled:
            self.dns_server = self._dns_server()
            await self.dns_server.start()
            self.metrics.watch_dns(
                self.dns_server.query_counts, self.dns_server.rate_limited_counts
            )
            for host, port in self.dns_server.addresses:
                log.info("DNS listening on %s port %d (UDP and TCP)", host, port)
        listeners = [] if self.dns_server is None else self.dns_server.addresses
        self.checker = PropagationChecker(
            self.settings.propagation,
            local_nameservers=local_nameservers(self.settings, listeners),
        )
        self.watch = PropagationWatch(self.checker, self.metrics, self.store)
        self.certificates = CertificateService(
            self.store,
            self.service,
            self.watch,
            self.settings.acme,
            replica=self.replica,
            metrics=self.metrics,
            audit_log=self.audit,
        )
        await self._start_http()
        self.reconciler = Reconciler(
            self.service,
            self.settings.challenges.reconcile_interval,
            self.store.leadership(),
            self.metrics,
            duties=[
                self.certificates.resume,
                self.certificates.renew_due,
                *([] if self.audit is None else [self.audit.purge]),
                *([] if self.oidc is None else [self._purge_replays]),
            ],
        )
        self._reconciler_task = asyncio.create_task(self.reconciler.run(), name="reconciler")

    def _dns_server(self) -> DnsServer | DnsWorkers:
        dns_settings = self.settings.dns
        update = dns_settings.update
        options: dict[str, Any] = {
            "max_udp_payload": dns_settings.max_udp_payload,
            "tcp_idle_timeout": dns_settings.tcp_idle_timeout,
            "signers": self._update_face() if update.enabled else None,
            "max_signed_in_flight": update.max_in_flight,
            "apex_zones": self._foreign_zones() if update.enabled else (),
            "rate_limit": dns_settings.rate_limit.limit(),
        }
        count = dns_settings.worker_count
        if count == 1:
            return DnsServer(self.zone_set, dns_settings.addresses, **options)
        log_settings = (self.settings.log.level, self.settings.log.format)
        return DnsWorkers(
            self.zone_set,
            dns_settings.addresses,
            count,
            log_settings=log_settings,
            reuseport=dns_settings.reuseport,
            **options,
        )

    async def _purge_replays(self) -> int:
        """Forget exchanged ID tokens once they expired (past the clock skew), and delete
        the broker tokens they were exchanged for a day after those expired."""
        now = time.time()
        purged = await self.store.purge_tokens(EXCHANGED_PREFIX, now - 86400)
        if purged:
            log.info("deleted %d exchanged token(s) expired over a day ago", purged)
        return purged + await self.store.purge_replays(now - self.settings.oidc.clock_skew)

    def _update_face(self) -> UpdateFace:
        assert self.service is not None
        return UpdateFace(
            self.service,
            secret_box(self.settings),
            self.settings.dns.update,
            self.metrics,
            self.service.router.zones,
            audit_log=self.audit,
        )

    def _foreign_zones(self) -> list[EmbeddedZone]:
        """Zones held by other providers, answered at their apex only: RFC 2136 clients
        look for the server to update by the zone's SOA."""
        assert self.service is not None
        embedded = {zone.settings.name for zone in self.zone_set.zones()}
        return [
            EmbeddedZone(EmbeddedZoneSettings(name=zone))
            for zone in self.service.router.zones()
            if zone not in embedded
        ]

    def _make_provider(self, name: str, settings: Any) -> DnsProvider:
        return guard_provider(make_provider(name, settings, self.zone_set), settings, self.metrics)

    async def _start_http(self) -> None:
        assert self.service is not None
        http = self.settings.http
        ssl_context = self._tls_context()
        app = build_app(
            ApiContext(
                service=self.service,
                store=self.store,
                authenticator=Authenticator(self.store, oidc=self.oidc),
                metrics=self.metrics,
                readiness=self.readiness,
                trusted_proxies=tuple(http.trusted_proxies),
                max_body_bytes=http.max_body_bytes,
                acmedns=self.acmedns,
                registration=RegistrationPolicy(
                    self.settings.acmedns.registration, tuple(self.settings.acmedns.register_from)
                ),
                delegation=self.delegation,
                watch=self.watch,
                certificates=self.certificates,
                httpreq_base=self.settings.httpreq.base_path
                if self.settings.httpreq.enabled
                else None,
                secret_box=secret_box(self.settings),
                audit=self.audit,
            ),
            RequestLimits(http, http.trusted_proxies),
        )
        self.http_app = app
        self._runner = GuardedAppRunner(
            app,
            header_timeout=http.header_timeout,
            keepalive_timeout=http.keepalive_timeout,
            access_log=logging.getLogger("aiohttp.access") if http.access_log else None,
            shutdown_timeout=http.shutdown_timeout,
        )
        await self._runner.setup()
        host, port = http.address
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        log.info("HTTP API listening on %s", self.http_url)

    def _tls_context(self) -> ssl.SSLContext | None:
        http = self.settings.http
        if http.tls_cert_file is None or http.tls_key_file is None:
            return None
        try:
            return ReloadingTls(http.tls_cert_file, http.tls_key_file).context
        except TlsConfigError as exc:
            raise ConfigError([("http.tls_cert_file", str(exc))]) from None

    async def stop(self) -> None:
        if self._reconciler_task is not None:
            self._reconciler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler_task
            self._reconciler_task = None
        if self._runner is not None:
            # Stop accepting, close idle connections, give requests in flight up to
            # http.shutdown_timeout, then cancel them (their intents stay marked for the
            # next leader); only then close what they use.
            log.info(
                "stopping: no new connections; requests in flight have %g s to finish",
                self.settings.http.shutdown_timeout,
            )
            await self._runner.cleanup()
            self._runner = None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self.certificates is not None:
            await self.certificates.close()
            self.certificates = None
        if self.checker is not None:
            await self.checker.close()
            self.checker = None
        if self.dns_server is not None:
            await self.dns_server.stop()
            self.dns_server = None
        if self.oidc is not None:
            await self.oidc.close()
            self.oidc = None
        if self.audit is not None:
            await self.audit.close()
            self.audit = None
        for provider in self.providers.values():
            await provider.close()
        self.providers.clear()
        await self.store.close()

    @property
    def http_url(self) -> str:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if self.settings.http.tls_cert_file is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.store.ping(), READINESS_TIMEOUT)
            checks["store"] = {"ok": True}
        except (BrokerError, TimeoutError) as exc:
            checks["store"] = {"ok": False, "detail": str(exc) or "timed out"}
        if self.replica_sync is not None:
            checks["changes"] = self.replica_sync.readiness()
        if self.dns_server is not None:
            checks["dns"] = await self._dns_readiness()
        for name, provider in self.providers.items():
            check = await self._provider_health.check(name, provider)
            if isinstance(provider, ResilientProvider):
                check = {**check, **_circuit_check(provider)}
            checks[f"provider:{name}"] = check
        return checks

    async def _dns_readiness(self) -> dict[str, Any]:
        assert self.dns_server is not None
        zones = self.zone_set.zones()
        if isinstance(self.dns_server, DnsWorkers):
            return await _workers_readiness(self.dns_server, zones)
        if not zones:
            return {"ok": True, "detail": "no embedded zones"}
        problem = await _soa_problem(self.dns_server.addresses[0], zones[0])
        return {"ok": True} if problem is None else {"ok": False, "detail": problem}

    async def _bootstrap_admin_token(self) -> None:
        if await self.store.count_tokens() > 0:
            return
        path = self.settings.auth.bootstrap_token_file
        issued = issue_token(BOOTSTRAP_TOKEN_NAME, [], admin=True)
        write_secret_file(path, issued.secret)
        try:
            await self.store.create_token(issued.record)
        except ConflictError:
            path.unlink(missing_ok=True)
            log.info("another replica made the bootstrap admin token at the same moment")
            return
        if self.audit is not None:
            self.audit.record("broker", audit.TOKEN_CREATE, BOOTSTRAP_TOKEN_NAME, actor="broker")
        log.info("no token existed: wrote a bootstrap admin token to %s (mode 0600)", path)


async def _soa_problem(address: tuple[str, int], zone: EmbeddedZone) -> str | None:
    """What is wrong with the SOA answer at ``address``, or None when it is right."""
    host, port = address
    query = dns.message.make_query(zone.origin, "SOA")
    try:
        answer = await dns.asyncquery.udp(query, host, port=port, timeout=READINESS_TIMEOUT)
    except (dns.exception.DNSException, OSError) as exc:
        return f"{host} port {port}: {exc or type(exc).__name__}"
    if answer.rcode() != dns.rcode.NOERROR or not answer.flags & dns.flags.AA:
        return f"SOA query answered {dns.rcode.to_text(answer.rcode())}"
    return None


async def _workers_readiness(workers: DnsWorkers, zones: list[EmbeddedZone]) -> dict[str, Any]:
    """Every DNS worker running and answering an SOA query on its probe port."""
    pids, failing = [], []
    for index, pid, probe in workers.probes():
        if pid is None or probe is None:
            failing.append(f"worker {index} not running")
            continue
        problem = None if not zones else await _soa_problem(probe, zones[0])
        if problem is None:
            pids.append(pid)
        else:
            failing.append(f"worker {index} (pid {pid}): {problem}")
    check: dict[str, Any] = {
        "ok": not failing,
        "workers": {"configured": workers.count, "alive": len(pids), "pids": pids},
    }
    if failing:
        check["detail"] = "; ".join(failing)
    return check


def make_provider(name: str, settings: Any, zone_set: ZoneSet) -> DnsProvider:
    if isinstance(settings, EmbeddedSettings):
        return EmbeddedProvider(name, settings, zone_set)
    _, provider_class = load_provider_type(settings.type)
    provider: DnsProvider = provider_class(name, settings)  # type: ignore[call-arg]
    return provider


def guard_provider(provider: DnsProvider, settings: Any, metrics: Metrics) -> DnsProvider:
    """Wrap a provider in its injected faults (if configured) and its retry policy and
    circuit breaker (providers with their own records, or any with faults)."""
    if settings.faults is not None:
        log.warning(
            "provider %s injects faults into %.0f%% of its calls (providers.%s.faults): "
            "for drills only",
            provider.name, settings.faults.total * 100, provider.name,
        )  # fmt: skip
        provider = FaultyProvider(provider, settings.faults)
    elif not provider.capabilities.keeps_records:
        return provider
    retries = metrics.provider_retries
    guarded = ResilientProvider(
        provider,
        settings.retry,
        on_retry=lambda operation: retries.labels(guarded.name, operation).inc(),
    )
    metrics.provider_circuit.labels(provider.name).set_function(lambda: guarded.breaker.state)
    return guarded


def _circuit_check(provider: ResilientProvider) -> dict[str, Any]:
    state = provider.breaker.state
    check: dict[str, Any] = {"circuit": state.name.lower().replace("_", "-")}
    if state is BreakerState.OPEN:
        check["ok"] = False
        check["detail"] = (
            f"circuit breaker open after {provider.breaker.failures} failed tries; "
            f"a probe call goes through in {provider.breaker.retry_after():.0f} s"
        )
    return check


@dataclass(frozen=True, slots=True)
class ProviderReport:
    name: str
    type: str
    zones: tuple[str, ...]
    health: dict[str, Any]


async def inspect_providers(settings: Settings) -> list[ProviderReport]:
    """Open every configured provider, check its credentials and list its zones."""
    reports = []
    for name, provider_settings in settings.providers.items():
        provider = make_provider(name, provider_settings, ZoneSet())
        try:
            await asyncio.wait_for(provider.open(), PROVIDER_CHECK_TIMEOUT)
            health = await check_provider(provider)
            zones = provider.zones()
        except (ProviderError, TimeoutError) as exc:
            health, zones = {"ok": False, "detail": str(exc) or "timed out"}, ()
        finally:
            await provider.close()
        reports.append(ProviderReport(name, provider_settings.type, zones, health))
    return reports


class ProviderHealth:
    """Provider checks for /readyz, remembered briefly so probes do not hammer the APIs."""

    def __init__(self, ttl: float = PROVIDER_CHECK_TTL) -> None:
        self._ttl = ttl
        self._results: dict[str, tuple[float, dict[str, Any]]] = {}

    async def check(self, name: str, provider: DnsProvider) -> dict[str, Any]:
        now = time.monotonic()
        cached = self._results.get(name)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        result = await check_provider(provider)
        self._results[name] = (now, result)
        return result


async def check_provider(provider: DnsProvider) -> dict[str, Any]:
    try:
        await asyncio.wait_for(provider.check(), PROVIDER_CHECK_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {PROVIDER_CHECK_TIMEOUT:g} s"}
    except ProviderError as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True}


def local_nameservers(
    settings: Settings, listeners: Sequence[tuple[str, int]]
) -> dict[str, list[tuple[str, int]]]:
    """For each embedded zone, where its answers can be checked: the DNS listeners, and
    every configured nameserver address at the listeners' ports."""
    reachable = [(_reachable(host), port) for host, port in listeners if port]
    if not reachable:
        return {}
    ports = sorted({port for _, port in reachable})
    servers: dict[str, list[tuple[str, int]]] = {}
    for provider in settings.providers.values():
        if not isinstance(provider, EmbeddedSettings):
            continue
        for zone in provider.zones:
            targets = list(reachable)
            for nameserver in zone.nameservers:
                targets += [(str(a), port) for a in nameserver.addresses for port in ports]
            servers[zone.name] = list(dict.fromkeys(targets))
    return servers


def _reachable(host: str) -> str:
    """A wildcard listener is checked on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def write_secret_file(path: Path, secret: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode("ascii"))
    finally:
        os.close(fd)
