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
from broker.store import ChallengeIntent, ChallengeRecord, ChallengeState
from broker.store.sqlite import SqliteStore
from providers.base import Change, DnsProvider, ProviderThrottledError
from providers.embedded import EmbeddedProvider, EmbeddedSettings, EmbeddedZoneSettings

TARGET = ChallengeTarget.from_domain("www.example.test")
ADMIN = Principal(name="admin", scopes=(), admin=True)


class FlakyBackend(DnsProvider):
    """An in-memory backend that refuses writes while ``refusing`` is set, as a
    throttled API would, and records the order in which changes arrive."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.values: dict[str, list[str]] = {}
        self.refusing = False
        self.lose_answers = 0
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
        if self.lose_answers:
            self.lose_answers -= 1
            raise ProviderThrottledError("the answer was lost")
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


async def test_a_failed_present_is_taken_back(service, store, backend):
    backend.refusing = True
    with pytest.raises(ProviderFailureError) as caught:
        await service.present(ADMIN, TARGET, "one", None)
    assert caught.value.is_retryable is True
    assert caught.value.provider == "flaky"
    # The take-back failed too: the record stays, marked, for the leader to finish.
    [marked] = await store.live_challenges()
    assert marked.intent is ChallengeIntent.REMOVE
    backend.refusing = False
    assert await service.finish() == 1
    assert await store.live_challenges() == []
    assert backend.values.get(TARGET.fqdn, []) == []


async def test_presenting_again_keeps_a_value_whose_take_back_was_pending(service, store, backend):
    backend.refusing = True
    with pytest.raises(ProviderFailureError):
        await service.present(ADMIN, TARGET, "one", None)
    backend.refusing = False
    again = (await service.present(ADMIN, TARGET, "one", None)).record
    assert (await store.challenge(again.id)).intent is None  # type: ignore[union-attr]
    assert await service.finish() == 0
    assert backend.values[TARGET.fqdn] == ["one"]


async def test_a_present_whose_answer_was_lost_leaves_no_value(service, store, backend):
    """The provider made the change but the call failed: the value is removed again."""
    backend.lose_answers = 1
    with pytest.raises(ProviderFailureError):
        await service.present(ADMIN, TARGET, "one", None)
    assert backend.values[TARGET.fqdn] == []
    assert await store.live_challenges() == []
    assert await store.unfinished_challenges() == []


async def test_a_present_is_marked_until_the_provider_took_it(service, store, backend):
    seen: list[ChallengeIntent | None] = []
    add = backend.add_txt

    async def watching_add(zone: str, name: str, value: str, ttl: int) -> Change | None:
        seen.extend(r.intent for r in await store.live_challenges())
        return await add(zone, name, value, ttl)

    backend.add_txt = watching_add  # type: ignore[method-assign]
    record = (await service.present(ADMIN, TARGET, "one", None)).record
    assert seen == [ChallengeIntent.ADD]
    assert (await store.challenge(record.id)).intent is None  # type: ignore[union-attr]


async def test_the_leader_finishes_what_a_crash_left(service, store, backend, clock):
    """A crash after the intent and before the provider: an add is made, a removal done."""
    added = ChallengeRecord(
        id="crashed-add", fqdn=TARGET.fqdn, value="add-me", zone="example.test.",
        provider="flaky", owner="admin", created_at=clock.now, expires_at=clock.now + 60,
        intent=ChallengeIntent.ADD,
    )  # fmt: skip
    assert await store.put_challenge(added, 16) is not None
    removing = (await service.present(ADMIN, TARGET, "remove-me", None)).record
    await store.intend(removing.id, ChallengeIntent.REMOVE)
    assert await service.finish() == 2
    assert backend.values[TARGET.fqdn] == ["add-me"]
    assert (await store.challenge("crashed-add")).intent is None  # type: ignore[union-attr]
    ended = await store.challenge(removing.id)
    assert ended is not None
    assert ended.state is ChallengeState.REMOVED
    assert await service.finish() == 0


async def test_a_removal_marked_after_its_lease_ends_as_expired(service, store, clock):
    record = (await service.present(ADMIN, TARGET, "one", 30)).record
    await store.intend(record.id, ChallengeIntent.REMOVE)
    clock.now += 31
    assert await service.finish() == 1
    assert (await store.challenge(record.id)).state is ChallengeState.EXPIRED  # type: ignore[union-attr]


async def test_finishing_skips_what_a_request_finished_meanwhile(service, store, backend):
    record = (await service.present(ADMIN, TARGET, "one", None)).record
    await store.intend(record.id, ChallengeIntent.REMOVE)
    await service.cleanup(ADMIN, TARGET, "one")
    assert await service.finish() == 0
    assert [op for op, _ in backend.log] == ["add", "remove"]


async def test_a_provider_failure_on_finishing_keeps_the_mark(service, store, backend):
    record = (await service.present(ADMIN, TARGET, "one", None)).record
    await store.intend(record.id, ChallengeIntent.REMOVE)
    backend.refusing = True
    assert await service.finish() == 0
    assert (await store.challenge(record.id)).intent is ChallengeIntent.REMOVE  # type: ignore[union-attr]


async def test_restore_refills_only_providers_that_forget(store, backend):
    """The embedded zone is refilled from the store at start (a value cleaned up or being
    removed is not); a provider keeping its own records is left alone."""
    zone = EmbeddedSettings(zones=[EmbeddedZoneSettings(name="embedded.test")])
    embedded = EmbeddedProvider("embedded", zone)
    service = ChallengeService(
        store, ZoneRouter({"flaky": backend, "embedded": embedded}), ChallengeSettings(), Metrics()
    )
    kept = ChallengeTarget.from_domain("kept.embedded.test")
    for target, value in ((TARGET, "cloud"), (kept, "kept"), (kept, "going"), (kept, "gone")):
        await service.present(ADMIN, target, value, None)
    await service.cleanup(ADMIN, kept, "gone")
    going = await store.live_challenge(kept.fqdn, "going")
    assert going is not None
    await store.intend(going.id, ChallengeIntent.REMOVE)
    fresh_backend, fresh_embedded = FlakyBackend(), EmbeddedProvider("embedded", zone)
    router = ZoneRouter({"flaky": fresh_backend, "embedded": fresh_embedded})
    restarted = ChallengeService(store, router, ChallengeSettings(), Metrics())
    assert await restarted.restore() == 3
    assert fresh_backend.log == []
    assert await fresh_embedded.list_txt("embedded.test.", kept.fqdn) == ["kept"]


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


async def test_finishing_an_add_submits_without_waiting_for_it_to_apply(store, clock):
    crashed = ChallengeRecord(
        id="crashed", fqdn=TARGET.fqdn, value="one", zone="example.test.", provider="flaky",
        owner="admin", created_at=clock.now, expires_at=clock.now + 60,
        intent=ChallengeIntent.ADD,
    )  # fmt: skip
    await store.put_challenge(crashed, 16)
    slow = SlowSync()
    restarted = ChallengeService(
        store, ZoneRouter({"slow": slow}), ChallengeSettings(), Metrics(), clock=clock
    )
    assert await asyncio.wait_for(restarted.finish(), 2) == 1
    assert slow.values[TARGET.fqdn] == ["one"]
