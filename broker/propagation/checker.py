"""PropagationChecker: does every authoritative nameserver of a name serve a TXT value?

One round (``check``) follows CNAMEs, finds the zone and every nameserver address, and
asks each address directly (RD=0). ``wait`` repeats rounds on a growing interval until
the policy is met or the deadline passes; within a ``wait`` a server seen serving the
value is not asked again, and under ``quorum`` a round ends as soon as a majority has
it. Queries for the same (address, port, name) in flight at once are shared by every
caller, and the waits polling one address pace themselves together: each pauses at
least (names polled on that address) / ``server_rate`` seconds, so a thousand waits on
one server ask it some ``server_rate`` times a second rather than twenty thousand.
Recursive resolvers are asked only once the authoritative servers are ready: asking
earlier would plant the very negative-cache entry the report warns about.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from broker.propagation.cache import Coalescer
from broker.propagation.discovery import Discovery, DiscoveryError, Nameserver
from broker.propagation.report import (
    PropagationReport,
    ResolverState,
    ServerState,
    describe_lacking,
    is_ready,
)
from broker.propagation.settings import DNS_PORT, PropagationSettings, zone_key
from broker.propagation.wire import (
    ANSWERED_RCODES,
    QueryError,
    exchange,
    follow_answer,
    lame_reason,
    negative_ttl,
    txt_values,
)

logger = logging.getLogger(__name__)

NO_SERVERS: Mapping[str, Sequence[tuple[str, int]]] = MappingProxyType({})
_QueryKey = tuple[str, int, dns.name.Name, bool]
_Polled = tuple[str, int, str]
"""(address, port, name): one name a wait polls on one nameserver address."""


@dataclass(frozen=True, slots=True)
class _Observation:
    """One response (or failure) of one server to one TXT query, shared by callers."""

    answered: bool
    values: tuple[bytes, ...]
    error: str | None
    checked_at: float
    unroutable: bool = False
    negative: bool = False
    negative_ttl: int | None = None


@dataclass(slots=True)
class _Round:
    fqdn: str
    value: str
    target: str
    zone: str | None = None
    states: dict[Nameserver, ServerState] = field(default_factory=dict)
    error: str | None = None
    permanent: bool = False
    name: dns.name.Name | None = None


class PropagationChecker:
    """Checks and waits for TXT values on authoritative nameservers.

    ``local_nameservers``: zone -> [(host, port)] for zones the broker serves itself;
    ``settings.nameservers`` win for the same zone. ``nameserver_port``: the port asked
    on discovered nameservers (53; labs and tests serving on other ports change it).
    """

    def __init__(
        self,
        settings: PropagationSettings,
        *,
        local_nameservers: Mapping[str, Sequence[tuple[str, int]]] = NO_SERVERS,
        nameserver_port: int = DNS_PORT,
    ) -> None:
        overrides = {zone_key(zone): list(servers) for zone, servers in local_nameservers.items()}
        overrides.update(settings.nameserver_overrides())
        self._settings = settings
        self._check_resolvers = settings.check_resolver_addresses()
        self._queries: Coalescer[_QueryKey, _Observation] = Coalescer()
        self._polling: dict[tuple[str, int], Counter[str]] = {}
        self._discovery = Discovery(
            resolvers=settings.resolver_addresses(),
            overrides=overrides,
            nameserver_port=nameserver_port,
            query_timeout=settings.query_timeout,
            cache_size=settings.cache_size,
        )
        self._closed = False

    @property
    def queries_sent(self) -> int:
        """TXT queries sent to servers and resolvers so far (shared ones count once)."""
        return self._queries.started

    async def close(self) -> None:
        self._closed = True
        await self._queries.close()
        await self._discovery.close()

    async def check(self, fqdn: str, value: str) -> PropagationReport:
        """One round, now: every server asked once."""
        since = time.time(), time.monotonic()
        budget = self._settings.check_timeout
        result, ready, resolvers = await self._full_round(fqdn, value, None, budget, early=False)
        return _report(result, ready, resolvers, since)

    async def wait(
        self,
        fqdn: str,
        value: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the caller's deadline for it all
        on_update: Callable[[PropagationReport], None] | None = None,
    ) -> PropagationReport:
        """Rounds until ready or ``timeout`` (default ``settings.timeout``) seconds; the
        last report, with error ``deadline passed ...`` when time ran out. A round cut
        short by the deadline keeps what earlier rounds found."""
        limit = self._settings.timeout if timeout is None else timeout
        if not math.isfinite(limit):
            raise ValueError(
                f"a propagation deadline must be a finite number of seconds, not {limit}"
            )
        since = time.time(), time.monotonic()
        deadline = since[1] + limit
        interval = self._settings.first_interval
        result: _Round | None = None
        polling: set[_Polled] = set()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if result is not None and remaining <= 0:
                    result.error = _deadline_error(limit, result)
                    report = _report(result, False, (), since)
                    break
                budget = min(self._settings.check_timeout, remaining)
                result, ready, resolvers = await self._full_round(
                    fqdn, value, result, budget, early=True
                )
                report = _report(result, ready, resolvers, since)
                if ready or result.permanent:
                    break
                if on_update is not None:
                    on_update(report)
                polling = self._poll(polling, result)
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    await asyncio.sleep(min(self._pause(interval, polling), remaining))
                    interval = min(self._settings.max_interval, interval * self._settings.backoff)
        finally:
            self._poll(polling, None)
        if on_update is not None:
            on_update(report)
        _log_outcome(report)
        return report

    def _poll(self, before: set[_Polled], result: _Round | None) -> set[_Polled]:
        """Count one wait as polling the addresses of ``result`` not yet seen (none when
        None) for its name instead of ``before``; returns them."""
        now: set[_Polled] = set()
        if result is not None:
            now = {(s.address, s.port, result.fqdn) for s in result.states.values() if not s.seen}
        for address, port, name in now - before:
            self._polling.setdefault((address, port), Counter())[name] += 1
        for address, port, name in before - now:
            names = self._polling[address, port]
            names[name] -= 1
            if names[name] <= 0:
                del names[name]
                if not names:
                    del self._polling[address, port]
        return now

    def _pause(self, interval: float, polling: set[_Polled]) -> float:
        """The wait's own interval, or longer when waits poll many names on the same
        address: at ``server_rate`` queries a second together, on average. The pause is
        spread by the name, so waits for one name keep sharing their queries and waits for
        different names that started together drift apart."""
        sharing = max((len(self._polling[a, p]) for a, p, _ in polling), default=0)
        paced = sharing / self._settings.server_rate
        if paced <= interval:
            return interval
        name = next(iter(polling))[2]
        return paced * (0.5 + zlib.crc32(name.encode()) / 0xFFFFFFFF)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the propagation checker is closed")

    async def _full_round(
        self, fqdn: str, value: str, previous: _Round | None, budget: float, *, early: bool
    ) -> tuple[_Round, bool, tuple[ResolverState, ...]]:
        """A round, then the resolvers if it found the value ready. Queries cancelled by
        ``close()`` end the caller with RuntimeError, not with a stray cancellation."""
        self._check_open()
        try:
            result = await self._round(fqdn, value, previous, budget, early=early)
            ready = result.error is None and self._ready(result.states)
            resolvers = await self._ask_resolvers(result.name, value) if ready else ()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise RuntimeError("the propagation checker is closed") from None
            raise
        return result, ready, resolvers

    def _ready(self, states: Mapping[Nameserver, ServerState]) -> bool:
        return is_ready(states.values(), self._settings.policy)

    async def _round(
        self,
        fqdn: str,
        value: str,
        previous: _Round | None,
        budget: float,
        *,
        early: bool,
    ) -> _Round:
        """Discovery, then every server not yet seen; what is not found keeps the state
        of ``previous``."""
        result = _Round(fqdn, value, fqdn)
        if previous is not None:
            result.target, result.zone, result.name = previous.target, previous.zone, previous.name
            result.states = dict(previous.states)
        try:
            async with asyncio.timeout(budget):
                result.name = _parse_name(fqdn)
                target = await self._discovery.target(result.name)
                delegation = await self._discovery.delegation(target)
                result.target, result.zone = target.to_text(), delegation.zone
                result.states = {
                    server: result.states.get(server) or _unasked(server)
                    for server in delegation.servers
                }
                await self._ask_servers(target, _encode(value), result.states, early=early)
        except DiscoveryError as exc:
            result.error, result.permanent = str(exc), exc.permanent
        except TimeoutError:
            result.error = f"no complete answer within the round's {max(budget, 0):g} s"
        return result

    async def _ask_servers(
        self,
        target: dns.name.Name,
        value: bytes,
        states: dict[Nameserver, ServerState],
        *,
        early: bool,
    ) -> None:
        """Updates ``states`` as answers come in; with ``early``, stops once ready."""
        loop = asyncio.get_running_loop()
        pending = {
            loop.create_task(self._observe(server.address, server.port, target, False)): server
            for server, state in states.items()
            if not state.seen
        }
        try:
            while pending and not (early and self._ready(states)):
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    server = pending.pop(task)
                    states[server] = _server_state(server, task.result(), value)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _ask_resolvers(
        self, name: dns.name.Name | None, value: str
    ) -> tuple[ResolverState, ...]:
        if name is None or not self._check_resolvers:
            return ()
        observations = await asyncio.gather(
            *(self._observe(host, port, name, True) for host, port in self._check_resolvers)
        )
        wanted = _encode(value)
        return tuple(
            ResolverState(
                address=host,
                port=port,
                answered=seen.answered,
                seen=wanted in seen.values,
                negative=seen.negative,
                negative_ttl=seen.negative_ttl,
                error=seen.error,
                checked_at=seen.checked_at,
            )
            for (host, port), seen in zip(self._check_resolvers, observations, strict=True)
        )

    async def _observe(
        self, address: str, port: int, name: dns.name.Name, recursive: bool
    ) -> _Observation:
        start = functools.partial(self._query, address, port, name, recursive)
        return await self._queries.run((address, port, name, recursive), start)

    async def _query(
        self, address: str, port: int, name: dns.name.Name, recursive: bool
    ) -> _Observation:
        try:
            response = await exchange(
                name,
                dns.rdatatype.TXT,
                address,
                port,
                recursive=recursive,
                attempt_timeout=self._settings.query_timeout,
            )
        except QueryError as exc:
            return _Observation(False, (), str(exc), time.time(), unroutable=exc.unroutable)
        now = time.time()
        if recursive:
            if response.rcode() not in ANSWERED_RCODES:
                return _Observation(False, (), dns.rcode.to_text(response.rcode()), now)
        elif (reason := lame_reason(response)) is not None:
            return _Observation(False, (), reason, now)
        _, rrset = follow_answer(response, name, dns.rdatatype.TXT)
        if rrset is None:
            return _Observation(
                True, (), None, now, negative=True, negative_ttl=negative_ttl(response)
            )
        return _Observation(True, txt_values(rrset), None, now)


def _report(
    result: _Round,
    ready: bool,
    resolvers: tuple[ResolverState, ...],
    since: tuple[float, float],
) -> PropagationReport:
    """``since``: (unix time, monotonic time) of the start."""
    return PropagationReport(
        fqdn=result.fqdn,
        target=result.target,
        zone=result.zone,
        value=result.value,
        ready=ready,
        servers=tuple(result.states.values()),
        resolvers=resolvers,
        started_at=since[0],
        elapsed=time.monotonic() - since[1],
        error=result.error,
    )


def _parse_name(fqdn: str) -> dns.name.Name:
    try:
        return dns.name.from_text(fqdn)
    except (dns.exception.DNSException, ValueError) as exc:
        raise DiscoveryError(f"{fqdn!r} is not a domain name: {exc}", permanent=True) from None


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _unasked(server: Nameserver) -> ServerState:
    return ServerState(server.name, server.address, server.port, False, False, None, None)


def _server_state(server: Nameserver, seen: _Observation, value: bytes) -> ServerState:
    error = seen.error
    if seen.unroutable:
        error = f"{error} (no route from this host: not counted)"
    return ServerState(
        nameserver=server.name,
        address=server.address,
        port=server.port,
        answered=seen.answered,
        seen=seen.answered and value in seen.values,
        error=error,
        checked_at=seen.checked_at,
        counted=not seen.unroutable,
    )


def _deadline_error(limit: float, result: _Round) -> str:
    if not result.states:
        return f"deadline passed after {limit:g} s: {result.error}"
    lacking = [state for state in result.states.values() if not state.seen]
    return (
        f"deadline passed after {limit:g} s: {len(lacking)} of {len(result.states)} "
        f"nameserver addresses lack the value: {describe_lacking(lacking)}"
    )


def _log_outcome(report: PropagationReport) -> None:
    if report.ready:
        logger.info(
            "propagation of %s ready after %.3f s on %d nameserver addresses",
            report.fqdn,
            report.elapsed,
            len(report.servers),
        )
    else:
        logger.info("propagation of %s not ready: %s", report.fqdn, report.error)
