"""Both stores, one suite: what the broker relies on of its store, on SQLite and on
PostgreSQL alike, and what only the shared store must add (concurrency across replicas,
change notifications, leadership)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from broker.auth import issue_token
from broker.errors import ConflictError
from broker.store import ChallengeIntent, ChallengeRecord, ChallengeState, OrderState, Store
from broker.store.base import CertificateOrderRecord
from broker.store.changes import Resync, StoreChange, TokenChanged, TxtChanged
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore

FQDN = "_acme-challenge.www.example.test."


def challenge(value: str, *, at: float | None = None, lease: float = 600) -> ChallengeRecord:
    now = time.time() if at is None else at
    return ChallengeRecord(
        id=f"id-{value}", fqdn=FQDN, value=value, zone="example.test.", provider="embedded",
        owner="web1", created_at=now, expires_at=now + lease,
    )  # fmt: skip


async def test_a_live_value_is_stored_once_and_its_lease_only_grows(store: Store):
    first = challenge("v1", lease=600)
    assert await store.put_challenge(first, 16) == (first, True)
    shorter = replace(first, id="again", expires_at=first.expires_at - 500)
    assert await store.put_challenge(shorter, 16) == (first, False)
    longer = replace(first, id="later", expires_at=first.expires_at + 5)
    extended = replace(first, expires_at=longer.expires_at)
    assert await store.put_challenge(longer, 16) == (extended, False)
    assert await store.live_at(FQDN) == [extended]


async def test_the_value_cap_counts_live_values_only(store: Store):
    for index in range(3):
        assert await store.put_challenge(challenge(f"v{index}"), 3) is not None
    assert await store.put_challenge(challenge("v3"), 3) is None
    await store.end_challenge("id-v0", ChallengeState.REMOVED, time.time())
    assert await store.put_challenge(challenge("v3"), 3) is not None
    assert sorted(r.value for r in await store.live_at(FQDN)) == ["v1", "v2", "v3"]


async def test_intents_are_stored_kept_by_upserts_listed_and_cleared(store: Store):
    marked = replace(challenge("v1"), intent=ChallengeIntent.ADD)
    assert await store.put_challenge(marked, 16) == (marked, True)
    await store.put_challenge(challenge("v2"), 16)
    assert await store.unfinished_challenges() == [marked]
    again = replace(marked, id="again", intent=None)  # a repeat present keeps the mark
    assert await store.put_challenge(again, 16) == (marked, False)
    removing = await store.intend("id-v2", ChallengeIntent.REMOVE)
    assert removing is not None
    assert removing.intent is ChallengeIntent.REMOVE
    assert await store.intend("id-v1", None) is not None
    assert [r.id for r in await store.unfinished_challenges()] == ["id-v2"]
    ended = await store.end_challenge("id-v2", ChallengeState.REMOVED, time.time())
    assert ended is not None
    assert ended.intent is None
    assert await store.intend("id-v2", ChallengeIntent.REMOVE) is None  # no longer live
    assert await store.unfinished_challenges() == []


async def test_reports_are_kept_replaced_and_purged_with_their_record(store: Store):
    await store.put_challenge(challenge("v1"), 16)
    await store.put_report("id-v1", '{"n": 1}', 1.0)
    await store.put_report("id-v1", '{"n": 2}', 2.0)
    assert await store.report("id-v1") == '{"n": 2}'
    await store.end_challenge("id-v1", ChallengeState.EXPIRED, 10.0)
    assert await store.purge_ended(11.0) == 1
    assert await store.report("id-v1") is None


async def test_a_lapsed_claim_is_taken_over_and_a_live_one_is_not(store: Store):
    order = CertificateOrderRecord(
        id="o1", owner="web1", names=("www.example.test",), csr_pem="-", directory="d",
        state=OrderState.PENDING, created_at=1.0, updated_at=1.0, claimed_by="a",
        claimed_until=100.0,
    )  # fmt: skip
    await store.create_order(order)
    assert await store.claim_orders("b", now=50.0, until=80.0) == []
    assert await store.extend_claim("o1", "a", 200.0)
    assert not await store.extend_claim("o1", "b", 300.0)
    claimed = await store.claim_orders("b", now=250.0, until=280.0)
    assert [(o.id, o.claimed_by, o.claimed_until) for o in claimed] == [("o1", "b", 280.0)]
    await store.release_claims("b")
    assert [o.id for o in await store.claim_orders("c", now=251.0, until=281.0)] == ["o1"]
    await store.finish_order("o1", OrderState.VALID, 260.0, fullchain_pem="pem")
    assert await store.claim_orders("d", now=10_000.0, until=10_030.0) == []


async def test_kept_certificates_are_claimed_when_a_third_is_left_and_retried_later(
    store: Store,
):
    kept = CertificateOrderRecord(
        id="kept", owner="web1", names=("www.example.test",), csr_pem="-", directory="d",
        state=OrderState.PENDING, created_at=1.0, updated_at=1.0, renew=True,
    )  # fmt: skip
    await store.create_order(kept)
    await store.create_order(replace(kept, id="once", renew=False))
    for order_id in ("kept", "once"):
        await store.finish_order(
            order_id, OrderState.VALID, 2.0, fullchain_pem="pem1", validity=(0.0, 900.0)
        )
    # due once a third of the lifetime is left: at 600 of 0..900
    assert await store.claim_renewals("a", now=599.0, until=629.0) == []
    claimed = await store.claim_renewals("a", now=600.0, until=630.0)
    assert [(o.id, o.claimed_by, o.not_after) for o in claimed] == [("kept", "a", 900.0)]
    assert await store.claim_renewals("b", now=610.0, until=640.0) == []
    assert await store.extend_claim("kept", "a", 660.0)

    await store.renewal_failed("kept", '{"detail": "CA down"}', retry_at=4000.0)
    failed = await store.order("kept")
    assert failed is not None
    assert (failed.fullchain_pem, failed.renewal_error) == ("pem1", '{"detail": "CA down"}')
    assert await store.claim_renewals("b", now=3999.0, until=4029.0) == []
    assert [o.id for o in await store.claim_renewals("b", now=4000.5, until=4030.0)] == ["kept"]

    await store.record_renewal("kept", "pem2", (4000.0, 4900.0), at=4001.0)
    renewed = await store.order("kept")
    assert renewed is not None
    assert (renewed.fullchain_pem, renewed.not_before, renewed.not_after) == (
        "pem2",
        4000.0,
        4900.0,
    )
    assert (renewed.renewals, renewed.renewal_error, renewed.claimed_by) == (1, None, None)
    assert await store.claim_renewals("c", now=4001.0, until=4031.0) == []
    assert [o.id for o in await store.kept_certificates()] == ["kept"]


async def test_the_token_generation_moves_with_every_token_change(store: Store):
    feed = store.changes()
    runner = None
    if feed is not None:
        seen: list[StoreChange] = []

        async def collect(change: StoreChange) -> None:
            seen.append(change)

        runner = asyncio.create_task(feed.run(collect))
        await _until(lambda: feed.connected)
    try:
        before = await store.token_generation()
        assert before is not None
        issued = issue_token("web1", ["example.test"])
        await store.create_token(issued.record)
        await _until_changed(store, before)
        middle = await store.token_generation()
        await store.revoke_token("web1", time.time())
        await _until_changed(store, middle)
        after = await store.token_generation()
        await store.create_token(issue_token("web1", ["example.test"]).record)
        await _until_changed(store, after)
        with pytest.raises(ConflictError):
            await store.create_token(issue_token("web1", ["example.test"]).record)
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def test_one_leader_at_a_time_and_the_next_when_it_goes(store: Store, tmp_path: Path):
    second = _second_handle(store, tmp_path)
    await second.open()
    try:
        assert await store.leadership().try_acquire()
        assert not await second.leadership().try_acquire()
        await store.leadership().release()
        assert await second.leadership().try_acquire()
        assert not await store.leadership().try_acquire()
    finally:
        await second.close()


async def test_postgresql_caps_values_across_replicas_racing_for_one_name(
    postgres_url: str,
):
    """Two stores (two replicas' pools), no lock of the broker's: only the database's."""
    replicas = [PostgresStore(postgres_url, None, pool_size=10) for _ in range(2)]
    for replica in replicas:
        await replica.open()
    try:
        puts = [
            replicas[index % 2].put_challenge(challenge(f"race{index:02d}"), 4)
            for index in range(40)
        ]
        results = await asyncio.gather(*puts)
        assert sum(result is not None for result in results) == 4
        assert len(await replicas[0].live_at(FQDN)) == 4
    finally:
        for replica in replicas:
            await replica.close()


async def test_postgresql_tells_a_replica_what_the_others_changed(postgres_url: str):
    """What another replica writes is delivered; what this one wrote is not (its memory
    has it), except that its token changes still move its token generation."""
    listening, other = PostgresStore(postgres_url, None), PostgresStore(postgres_url, None)
    await listening.open()
    await other.open()
    seen: list[StoreChange] = []

    async def collect(change: StoreChange) -> None:
        seen.append(change)

    feed = listening.changes()
    runner = asyncio.create_task(feed.run(collect))
    try:
        await _until(lambda: feed.connected)
        await other.put_challenge(challenge("v1"), 16)
        await other.put_challenge(challenge("v1"), 16)  # a lease extension: no change
        await other.end_challenge("id-v1", ChallengeState.REMOVED, time.time())
        issued = issue_token("web1", ["example.test"])
        await other.create_token(issued.record)
        await _until(lambda: len(seen) >= 4)
        before = await listening.token_generation()
        await listening.put_challenge(challenge("v2"), 16)
        await listening.create_token(issue_token("web2", ["example.test"]).record)
        await _until_changed(listening, before)
        await asyncio.sleep(0.1)
        assert seen == [
            Resync(),
            TxtChanged("embedded", FQDN),
            TxtChanged("embedded", FQDN),
            TokenChanged(issued.record.key),
        ]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await listening.close()
        await other.close()


def _second_handle(store: Store, tmp_path: Path) -> Store:
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    assert isinstance(store, PostgresStore)
    return PostgresStore(store.url, None)


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def _until_changed(store: Store, before: int | None) -> None:
    deadline = time.monotonic() + 5
    while await store.token_generation() == before:
        assert time.monotonic() < deadline, "the token generation never moved"
        await asyncio.sleep(0.01)


async def test_rrset_locks_never_take_the_whole_postgresql_pool(postgres_url: str):
    """Each held RRset lock keeps a pool connection; the statements run under it need
    another. With more names locked at once than connections, only some may hold locks
    at a time, or every holder waits for a connection that no holder gives back."""
    store = PostgresStore(postgres_url, None, pool_size=2, timeout=2)
    await store.open()
    try:

        async def write_under_lock(index: int) -> None:
            async with store.rrset_lock("aws", f"n{index}.example.test."):
                await store.put_challenge(replace(challenge(f"v{index}"), id=f"i{index}"), 16)
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(write_under_lock(i) for i in range(8))), 20)
        assert len(await store.live_at(FQDN)) == 8
    finally:
        await store.close()
