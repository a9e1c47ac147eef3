"""Present, cleanup and status: the contract every face (HTTP, CLI, compat) shares.

Present appends and is idempotent; cleanup removes exactly one value and is a no-op
for an unknown one. Writes to one RRset are serialized (across replicas too, where the
provider keeps records of its own).

The store is written first, as a write-ahead intent, then the provider, then the
outcome: a present inserts its record marked "add" (unmarked once the provider took the
value), a removal marks the record "remove" before the provider call and ends it after.
Whatever a crash or a provider failure leaves marked, the leader finishes (re-adds, or
removes and ends), so the provider's values and the store's live records meet again:
no orphaned TXT value, no lost live one. The embedded zone is rebuilt from the store at
start and its changes in memory cannot fail, so they need no mark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from broker import audit
from broker.audit import AuditLog
from broker.auth import Principal
from broker.config import ChallengeSettings
from broker.delegation import DelegationResolver
from broker.dnsname import ChallengeTarget, is_subdomain
from broker.errors import (
    ForbiddenNameError,
    InvalidLeaseError,
    NotFoundError,
    NoZoneError,
    OneShotUsedError,
    ProviderFailureError,
    TooManyValuesError,
)
from broker.metrics import Metrics
from broker.persist import PERSIST_LABEL, is_grant_name
from broker.store import ChallengeIntent, ChallengeRecord, ChallengeState, Store
from broker.values import new_record_id
from providers.base import Change, DnsProvider, ProviderError
from providers.resilience import CircuitOpenError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    provider: DnsProvider
    zone: str


class ZoneRouter:
    """Maps a name to the provider serving its most specific configured zone."""

    def __init__(self, providers: Mapping[str, DnsProvider]) -> None:
        self._zones: dict[str, DnsProvider] = {}
        self._by_name: dict[str, DnsProvider] = {}
        for provider in providers.values():
            for zone in provider.zones():
                self._zones[zone] = provider
                self._by_name.setdefault(provider.name, provider)

    def route(self, fqdn: str) -> Route:
        best = max((z for z in self._zones if is_subdomain(fqdn, z)), key=len, default=None)
        if best is None:
            zones = ", ".join(sorted(self._zones)) or "(none)"
            raise NoZoneError(f"{fqdn} is in no zone this broker serves; its zones are {zones}")
        return Route(self._zones[best], best)

    def zones(self) -> list[str]:
        return list(self._zones)

    def provider(self, name: str) -> DnsProvider | None:
        return self._by_name.get(name)


class RRsetLocks:
    """One asyncio.Lock per (provider, name), dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, provider: str, fqdn: str) -> AsyncIterator[None]:
        key = (provider, fqdn)
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class WriteGate:
    """Writes of this process pass it side by side; a reload of everything from the
    store (after another replica's changes went unheard) passes it alone, so no write
    lands between the reload's read and its apply."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writers = 0

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._writers += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._writers -= 1
            if self._writers == 0:
                self._idle.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


@dataclass(frozen=True, slots=True)
class PresentResult:
    record: ChallengeRecord
    created: bool


class ChallengeService:
    def __init__(
        self,
        store: Store,
        router: ZoneRouter,
        settings: ChallengeSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        delegation: DelegationResolver | None = None,
    ) -> None:
        self.delegation = delegation
        self.store = store
        self.router = router
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._locks = RRsetLocks()
        self.writes = WriteGate()
        self.audit: AuditLog | None = None
        """Where grants the reconciler expires are recorded (set once the log runs)."""

    def now(self) -> float:
        return self._clock()

    async def present(
        self,
        principal: Principal,
        target: ChallengeTarget,
        value: str,
        lease: float | None,
        *,
        evict_oldest: bool = False,
    ) -> PresentResult:
        """Add ``value`` for ``target`` (at the end of its CNAME chain). At the per-name
        cap, ``evict_oldest`` removes the oldest value first (acme-dns semantics) instead
        of refusing."""
        principal.require_challenge(target.base, target.fqdn)
        await self._use_one_shot(principal, target, value)
        write_at = _not_a_grant(await self._write_target(principal, target))
        now = self._clock()
        expires_at = now + self._lease(lease)
        return await self._put(
            principal, target, write_at, value, expires_at, evict_oldest=evict_oldest
        )

    async def grant(
        self, principal: Principal, target: ChallengeTarget, value: str, expires_at: float
    ) -> PresentResult:
        """Write a dns-persist-01 grant (``target.fqdn`` is ``_validation-persist.<base>``)
        that lives until ``expires_at``: no lease cap, written at the name itself (never
        through a CNAME), and only for admins or tokens with the persist right."""
        principal.require_persist(target.base, target.fqdn)
        return await self._put(principal, target, target.fqdn, value, expires_at)

    async def _put(
        self,
        principal: Principal,
        target: ChallengeTarget,
        write_at: str,
        value: str,
        expires_at: float,
        *,
        evict_oldest: bool = False,
    ) -> PresentResult:
        route = self.router.route(write_at)
        now = self._clock()
        candidate = ChallengeRecord(
            id=new_record_id(),
            fqdn=write_at,
            value=value,
            zone=route.zone,
            provider=route.provider.name,
            owner=principal.name,
            created_at=now,
            expires_at=expires_at,
            delegated_from=None if write_at == target.fqdn else target.fqdn,
            intent=ChallengeIntent.ADD if route.provider.capabilities.keeps_records else None,
        )
        async with self._hold(route.provider, write_at):
            stored = await self.store.put_challenge(candidate, self.settings.max_values_per_name)
            if stored is None and evict_oldest:
                oldest = await self.store.oldest_live(write_at)
                if oldest is not None:
                    await self._end(route, oldest, ChallengeState.REMOVED, "eviction")
                stored = await self.store.put_challenge(
                    candidate, self.settings.max_values_per_name
                )
            if stored is None:
                raise TooManyValuesError(
                    f"{write_at} already holds {self.settings.max_values_per_name} live "
                    "values (challenges.max_values_per_name): clean up values no longer "
                    "needed, or wait for their leases to end"
                )
            record, created = stored
            try:
                change = await self._provider_add(route, record)
            except ProviderFailureError:
                if created or record.intent is ChallengeIntent.REMOVE:
                    await self._undo_add(route, record)
                raise
            if record.intent is not None:  # a new mark, or one an earlier failure left
                await self.store.intend(record.id, None)
        await self._wait_applied(route, change)
        if created:
            self.metrics.live_records.inc()
            self.metrics.challenge_events.labels("presented").inc()
            log.info(
                "%s presented id=%s fqdn=%s owner=%s provider=%s expires_in=%.0fs%s",
                "grant" if is_grant_name(record.fqdn) else "challenge",
                record.id, record.fqdn, record.owner, record.provider, record.expires_at - now,
                f" via={record.delegated_from}" if record.delegated_from else "",
            )  # fmt: skip
        return PresentResult(record, created)

    async def grants(self, principal: Principal) -> list[ChallengeRecord]:
        """The live dns-persist-01 grants for names in ``principal``'s scopes."""
        return [
            record
            for record in await self.store.live_under(PERSIST_LABEL)
            if principal.may_challenge(_base_of(record.fqdn))
        ]

    async def revoke_grant(self, principal: Principal, grant_id: str) -> ChallengeRecord:
        """Remove one live grant (other values at its name stay)."""
        record = await self.store.challenge(grant_id)
        if (
            record is None
            or record.state is not ChallengeState.PRESENT
            or not is_grant_name(record.fqdn)
            or not principal.may_challenge(_base_of(record.fqdn))
        ):
            raise NotFoundError(f"no live dns-persist-01 grant {grant_id!r} visible to this token")
        principal.require_persist(_base_of(record.fqdn), record.fqdn)
        route = Route(self._provider_of(record), record.zone)
        async with self._hold(route.provider, record.fqdn):
            live = await self.store.challenge(grant_id)
            ended = None
            if live is not None and live.state is ChallengeState.PRESENT:
                ended = await self._end(route, live, ChallengeState.REMOVED, principal.name)
        if ended is None:
            raise NotFoundError(f"no live dns-persist-01 grant {grant_id!r} visible to this token")
        return ended

    async def cleanup(
        self, principal: Principal, target: ChallengeTarget, value: str
    ) -> ChallengeRecord | None:
        principal.require_challenge(target.base, target.fqdn)
        await self._use_one_shot(principal, target, value)
        ended = await self._cleanup(principal, target, value)
        if principal.one_shot_key is not None:
            binding = _binding(target, value)
            await self.store.spend_one_shot(principal.one_shot_key, binding, self._clock())
            log.info("one-shot token spent name=%s fqdn=%s", principal.name, target.fqdn)
        return ended

    async def _cleanup(
        self, principal: Principal, target: ChallengeTarget, value: str
    ) -> ChallengeRecord | None:
        write_at = _not_a_grant(await self._write_target(principal, target))
        route = self.router.route(write_at)
        async with self._hold(route.provider, write_at):
            if _needs_marks(route.provider):
                record = await self.store.live_challenge(write_at, value)
                if record is None:
                    return None
                return await self._end(route, record, ChallengeState.REMOVED, principal.name)
            ended = await self.store.end_live(
                write_at, value, ChallengeState.REMOVED, self._clock()
            )
            if ended is not None:
                await route.provider.remove_txt(ended.zone, ended.fqdn, ended.value)
                self._ended(ended, principal.name)
            return ended

    async def _use_one_shot(
        self, principal: Principal, target: ChallengeTarget, value: str
    ) -> None:
        """A one-shot token's first present (or cleanup) binds it to that name and value;
        from then on it may write only those (its cleanup spends it)."""
        if principal.one_shot_key is None:
            return
        if not await self.store.bind_one_shot(principal.one_shot_key, _binding(target, value)):
            raise OneShotUsedError(
                f"one-shot token {principal.name!r} was used for another challenge: it is "
                "good for one present and the cleanup of that same name and value"
            )

    def holding(self, provider: str, fqdn: str) -> AbstractAsyncContextManager[None]:
        """This process's turn at one RRset (a replica reloading a name takes it too, so
        it never applies a read older than a write of its own)."""
        return self._locks.hold(provider, fqdn)

    @asynccontextmanager
    async def _hold(self, provider: DnsProvider, fqdn: str) -> AsyncIterator[None]:
        """Writes to one RRset take turns: within this process always, and across
        replicas too where the provider keeps records of its own (so that finishing an
        intent never races the request that left it) or rewrites whole RRsets."""
        async with self.writes.shared(), self._locks.hold(provider.name, fqdn):
            capabilities = provider.capabilities
            if capabilities.keeps_records or capabilities.rewrites_rrset:
                async with self.store.rrset_lock(provider.name, fqdn):
                    yield
            else:
                yield

    async def cleanup_own(
        self, principal: Principal, target: ChallengeTarget
    ) -> list[ChallengeRecord]:
        """Remove every live value at ``target`` that ``principal`` presented (an RFC 2136
        delete-RRset: never another token's values)."""
        principal.require_challenge(target.base, target.fqdn)
        write_at = _not_a_grant(await self._write_target(principal, target))
        route = self.router.route(write_at)
        removed = []
        async with self._hold(route.provider, write_at):
            for record in await self.store.live_at(write_at):
                if record.owner == principal.name:
                    ended = await self._end(route, record, ChallengeState.REMOVED, principal.name)
                    if ended is not None:
                        removed.append(ended)
        return removed

    async def _write_target(self, principal: Principal, target: ChallengeTarget) -> str:
        if self.delegation is None:
            return target.fqdn
        return await self.delegation.write_target(principal, target.fqdn)

    async def get(self, principal: Principal, challenge_id: str) -> ChallengeRecord:
        record = await self.store.challenge(challenge_id)
        requested = record.delegated_from if record is not None else None
        if record is None or not principal.may_challenge(_base_of(requested or record.fqdn)):
            raise NotFoundError(f"no challenge {challenge_id!r} visible to this token")
        return record

    async def expire_due(self) -> int:
        """Remove every record whose lease has ended; return how many."""

        async def expire(route: Route, record: ChallengeRecord) -> bool:
            if record.expires_at > self._clock():
                return False
            ended = await self._end(route, record, ChallengeState.EXPIRED, "reconciler")
            if ended is not None and is_grant_name(ended.fqdn) and self.audit is not None:
                self.audit.record(
                    "broker", audit.PERSIST_EXPIRE, f"{ended.fqdn} {ended.id}", actor="reconciler"
                )
            return ended is not None

        due = await self.store.due_challenges(self._clock())
        return await self._each_still_live(due, "expiry", expire)

    async def restore(self) -> int:
        """Put every live record back into the providers that forget them (the embedded
        zone, after a start); providers keeping their own records are left as they are,
        apart from unfinished changes, which the leader finishes (``finish``)."""
        records = await self.store.live_challenges()
        for record in records:
            provider = self._provider_of(record)
            if provider.capabilities.keeps_records or record.intent is ChallengeIntent.REMOVE:
                continue
            try:
                await self._provider_add(Route(provider, record.zone), record)
            except ProviderFailureError as exc:
                log.error("cannot restore challenge id=%s: %s", record.id, exc.detail)
        self.metrics.live_records.set(len(records))
        return len(records)

    async def finish(self) -> int:
        """Finish every provider change a crash or a failure left unfinished: a value
        marked "add" is added again, one marked "remove" removed and its record ended.
        Returns how many were finished; the rest stay marked for the next pass."""

        async def finish_one(route: Route, record: ChallengeRecord) -> bool:
            if record.intent is ChallengeIntent.ADD:
                await self._provider_add(route, record)
                await self.store.intend(record.id, None)
            elif record.intent is ChallengeIntent.REMOVE:
                ended = record.expires_at <= self._clock()
                state = ChallengeState.EXPIRED if ended else ChallengeState.REMOVED
                await self._end(route, record, state, "reconciler")
            else:
                return False
            self.metrics.unfinished_changes.labels(record.intent.value).inc()
            log.info(
                "finished an unfinished %s of challenge id=%s fqdn=%s",
                record.intent, record.id, record.fqdn,
            )  # fmt: skip
            return True

        unfinished = await self.store.unfinished_challenges()
        return await self._each_still_live(unfinished, "unfinished change", finish_one)

    async def _each_still_live(
        self,
        listed: list[ChallengeRecord],
        what: str,
        act: Callable[[Route, ChallengeRecord], Awaitable[bool]],
    ) -> int:
        """Run ``act`` on each listed record that is still live when its RRset's turn
        comes (read again under the lock: a request may have ended it meanwhile); a
        provider failure leaves that record for the next pass. Returns how many acts
        returned True."""
        done = 0
        for listed_record in listed:
            try:
                route = Route(self._provider_of(listed_record), listed_record.zone)
                async with self._hold(route.provider, listed_record.fqdn):
                    record = await self.store.challenge(listed_record.id)
                    if record is not None and record.state is ChallengeState.PRESENT:
                        done += await act(route, record)
            except ProviderFailureError as exc:
                log.warning(
                    "cannot finish the %s of challenge id=%s yet: %s",
                    what, listed_record.id, exc.detail,
                )  # fmt: skip
        return done

    async def purge_history(self) -> int:
        return await self.store.purge_ended(self._clock() - self.settings.history_retention)

    async def _end(
        self, route: Route, record: ChallengeRecord, state: ChallengeState, actor: str
    ) -> ChallengeRecord | None:
        """Remove a live value: marked first, then gone from the provider, then ended.
        A failure on the way leaves the mark, for a retried request or the leader. (A
        removal that cannot fail, from a zone the store rebuilds, needs no mark.)"""
        marked = record.intent is ChallengeIntent.REMOVE or not _needs_marks(route.provider)
        if not marked and await self.store.intend(record.id, ChallengeIntent.REMOVE) is None:
            return None
        try:
            await route.provider.remove_txt(record.zone, record.fqdn, record.value)
        except ProviderError as exc:
            raise _provider_failure(route.provider, exc) from exc
        ended = await self.store.end_challenge(record.id, state, self._clock())
        if ended is not None:
            self._ended(ended, actor)
        return ended

    def _ended(self, ended: ChallengeRecord, actor: str) -> None:
        self.metrics.live_records.dec()
        self.metrics.challenge_events.labels(ended.state.value).inc()
        log.info(
            "challenge %s id=%s fqdn=%s owner=%s by=%s",
            ended.state.value, ended.id, ended.fqdn, ended.owner, actor,
        )  # fmt: skip

    async def _undo_add(self, route: Route, record: ChallengeRecord) -> None:
        """Take back a new value whose provider write failed: it may have landed all the
        same (an answer lost on the way), so it is removed like any other, and its record
        forgotten once that is done. If the removal fails too, the mark stays and the
        leader finishes it."""
        if await self.store.intend(record.id, ChallengeIntent.REMOVE) is None:
            return
        try:
            await route.provider.remove_txt(record.zone, record.fqdn, record.value)
        except ProviderError as exc:
            log.warning(
                "cannot take back challenge id=%s yet (the leader will): %s", record.id, exc
            )
            return
        await self.store.delete_challenge(record.id)

    async def _provider_add(self, route: Route, record: ChallengeRecord) -> Change | None:
        try:
            return await route.provider.add_txt(
                record.zone, record.fqdn, record.value, self.settings.txt_ttl
            )
        except ProviderError as exc:
            raise _provider_failure(route.provider, exc) from exc

    async def _wait_applied(self, route: Route, change: Change | None) -> None:
        """Outside the RRset lock: a backend such as Route53 takes a minute to sync, and
        the other value of a wildcard + apex pair must not queue behind it. The record
        stays when the wait fails: the change was accepted and is on its way."""
        try:
            await route.provider.wait_applied(change)
        except ProviderError as exc:
            raise _provider_failure(route.provider, exc) from exc

    def _provider_of(self, record: ChallengeRecord) -> DnsProvider:
        provider = self.router.provider(record.provider)
        if provider is None:
            raise ProviderFailureError(
                f"record {record.id} belongs to provider {record.provider!r}, which is no "
                "longer configured",
                provider=record.provider,
                retryable=False,
            )
        return provider

    def _lease(self, lease: float | None) -> float:
        if lease is None:
            return self.settings.default_lease
        if not 1 <= lease <= self.settings.max_lease:
            raise InvalidLeaseError(
                f"lease {lease:g}s is out of range: give 1 to {self.settings.max_lease:g} seconds "
                "or leave it out for the default"
            )
        return lease


def _binding(target: ChallengeTarget, value: str) -> str:
    return f"{target.fqdn} {value}"


def _base_of(fqdn: str) -> str:
    return fqdn.partition(".")[2]


def _not_a_grant(fqdn: str) -> str:
    """Challenge writes never reach a grant's name, by any face or CNAME: grants are made
    and removed only as grants (``ChallengeService.grant``)."""
    if is_grant_name(fqdn):
        raise ForbiddenNameError(
            f"{fqdn} holds dns-persist-01 grants, which only POST /v1/persist writes"
        )
    return fqdn


def _provider_failure(provider: DnsProvider, exc: ProviderError) -> ProviderFailureError:
    log.warning("provider %s failed: %s", provider.name, exc)
    return ProviderFailureError(
        f"provider {provider.name!r} failed: {exc}",
        provider=provider.name,
        retryable=exc.retryable,
        retry_after=exc.retry_after if isinstance(exc, CircuitOpenError) else None,
    )


def _needs_marks(provider: DnsProvider) -> bool:
    """Whether changes at ``provider`` take write-ahead marks: not for a zone rebuilt
    from the store whose changes cannot fail half-way (the bare embedded zone)."""
    capabilities = provider.capabilities
    return capabilities.keeps_records or capabilities.can_fail
