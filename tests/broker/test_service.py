"""The challenge service over a real SQLite store: failure handling, locking, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.auth import Principal
from broker.config import ChallengeSettings
from broker.dnsname import ChallengeTarget, Scope
from broker.errors import ProviderFailureError
from broker.metrics import Metrics
from broker.service import ChallengeService, ZoneRouter
from broker.store import ChallengeState
from broker.store.sqlite import SqliteStore
from providers.base import Change, DnsProvider, ProviderThrottledError

TARGET = ChallengeTarget.from_domain("www.example.test")
ADMIN = Principal(name="admin", scopes=(), admin=True)


class FlakyBackend(DnsProvider):
    """An in-memory backend that refuses writes while ``refusing`` is set, as a
    throttled API would, and records the order in which changes arrive."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.values: dict[str, list[str]] = {}
        self.refusing = False
        self.log: list[tuple[str, str]] = []

    async def check(self) -> None:
        return None

    def zones(self) -> tuple[str, ...]:
        return ("example.test.",)

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        current = list(self.values.get(name, []))  # read, modify, write the whole RRset
        await asyncio.sleep(0.001)
        if self.refusing:
            raise ProviderThrottledError("rate exceeded")
        self.log.append(("add", value))
        if value not in current:
            current.append(value)
        self.values[name] = current
        return None

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        current = list(self.values.get(name, []))
        await asyncio.sleep(0.001)
        if self.refusing:
            raise ProviderThrottledError("rate exceeded")
        self.log.append(("remove", value))
        self.values[name] = [v for v in current if v != value]
        return None

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return list(self.values.get(name, []))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "broker.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def backend() -> FlakyBackend:
    return FlakyBackend()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: SqliteStore, backend: FlakyBackend, clock: Clock) -> ChallengeService:
    return ChallengeService(
        store, ZoneRouter({"flaky": backend}), ChallengeSettings(), Metrics(), clock=clock
    )


async def test_provider_failure_on_present_leaves_no_record(service, store, backend):
    backend.refusing = True
    with pytest.raises(ProviderFailureError) as caught:
        await service.present(ADMIN, TARGET, "one", None)
    assert caught.value.is_retryable is True
    assert caught.value.provider == "flaky"
    assert await store.live_challenges() == []


async def test_provider_failure_on_cleanup_keeps_the_record_live(service, store, backend):
    await service.present(ADMIN, TARGET, "one", None)
    backend.refusing = True
    with pytest.raises(ProviderFailureError):
        await service.cleanup(ADMIN, TARGET, "one")
    backend.refusing = False
    assert [r.value for r in await store.live_challenges()] == ["one"]
    assert await service.cleanup(ADMIN, TARGET, "one") is not None
    assert backend.values[TARGET.fqdn] == []


async def test_writes_to_one_rrset_are_serialized(service, backend):
    """The backend replaces the whole RRset (read, modify, write): without per-RRset
    serialization concurrent presents would lose each other's values."""
    await asyncio.gather(*(service.present(ADMIN, TARGET, f"v{i}", None) for i in range(10)))
    assert sorted(backend.values[TARGET.fqdn]) == sorted(f"v{i}" for i in range(10))
    await asyncio.gather(*(service.cleanup(ADMIN, TARGET, f"v{i}") for i in range(0, 10, 2)))
    assert sorted(backend.values[TARGET.fqdn]) == sorted(f"v{i}" for i in range(1, 10, 2))


async def test_expired_leases_are_removed_and_marked(service, store, backend, clock):
    short = (await service.present(ADMIN, TARGET, "short", 30)).record
    long = (await service.present(ADMIN, TARGET, "long", 3000)).record
    clock.now += 31
    assert await service.expire_due() == 1
    assert backend.values[TARGET.fqdn] == ["long"]
    stored = await store.challenge(short.id)
    assert stored is not None
    assert stored.state is ChallengeState.EXPIRED
    assert (await store.challenge(long.id)).state is ChallengeState.PRESENT  # type: ignore[union-attr]


async def test_a_lease_renewed_by_a_repeat_present_is_not_expired(service, backend, clock):
    await service.present(ADMIN, TARGET, "one", 30)
    clock.now += 20
    await service.present(ADMIN, TARGET, "one", 300)
    clock.now += 20
    assert await service.expire_due() == 0
    assert backend.values[TARGET.fqdn] == ["one"]


async def test_expiry_retries_after_a_provider_failure(service, backend, clock):
    await service.present(ADMIN, TARGET, "one", 30)
    clock.now += 60
    backend.refusing = True
    assert await service.expire_due() == 0
    backend.refusing = False
    assert await service.expire_due() == 1
    assert backend.values[TARGET.fqdn] == []


async def test_restore_reapplies_live_records_to_a_fresh_backend(store, clock):
    first = FlakyBackend()
    service = ChallengeService(
        store, ZoneRouter({"f": first}), ChallengeSettings(), Metrics(), clock=clock
    )
    await service.present(ADMIN, TARGET, "one", None)
    await service.present(ADMIN, TARGET, "two", None)
    await service.cleanup(ADMIN, TARGET, "two")
    fresh = FlakyBackend()
    restarted = ChallengeService(
        store, ZoneRouter({"f": fresh}), ChallengeSettings(), Metrics(), clock=clock
    )
    assert await restarted.restore() == 1
    assert fresh.values[TARGET.fqdn] == ["one"]


async def test_history_older_than_the_retention_is_purged(service, store, clock):
    record = (await service.present(ADMIN, TARGET, "one", None)).record
    await service.cleanup(ADMIN, TARGET, "one")
    clock.now += ChallengeSettings().history_retention + 1
    assert await service.purge_history() == 1
    assert await store.challenge(record.id) is None


async def test_scoped_principal_is_checked_before_anything_is_written(service, store):
    principal = Principal(name="web", scopes=(Scope.parse("api.example.test"),), admin=False)
    with pytest.raises(Exception, match="may not write"):
        await service.present(principal, TARGET, "one", None)
    assert await store.live_challenges() == []


class SlowSync(FlakyBackend):
    """A backend that accepts changes at once and applies them later (Route53's INSYNC)."""

    def __init__(self) -> None:
        super().__init__()
        self.applied = asyncio.Event()

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        await super().add_txt(zone, name, value, ttl)
        return Change(self.name, value)

    async def wait_applied(self, change: Change | None) -> None:
        self.log.append(("waiting", change.id if change else ""))
        await self.applied.wait()


async def test_waiting_for_a_change_to_apply_does_not_hold_the_rrset(store, clock):
    backend = SlowSync()
    service = ChallengeService(
        store, ZoneRouter({"slow": backend}), ChallengeSettings(), Metrics(), clock=clock
    )
    apex = asyncio.create_task(service.present(ADMIN, TARGET, "apex", None))
    wildcard = asyncio.create_task(service.present(ADMIN, TARGET, "wildcard", None))
    for _ in range(100):
        if len([entry for entry in backend.log if entry[0] == "waiting"]) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(backend.values[TARGET.fqdn]) == ["apex", "wildcard"]
    backend.applied.set()
    await asyncio.gather(apex, wildcard)


async def test_restore_submits_without_waiting_for_changes_to_apply(store, clock):
    first = ChallengeService(
        store, ZoneRouter({"slow": FlakyBackend()}), ChallengeSettings(), Metrics(), clock=clock
    )
    await first.present(ADMIN, TARGET, "one", None)
    slow = SlowSync()
    restarted = ChallengeService(
        store, ZoneRouter({"slow": slow}), ChallengeSettings(), Metrics(), clock=clock
    )
    assert await asyncio.wait_for(restarted.restore(), 2) == 1
    assert slow.values[TARGET.fqdn] == ["one"]
