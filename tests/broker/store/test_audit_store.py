"""The audit table and token rotation in both stores: events come back newest first,
filtered and paged without loss or repeat (also among events of the same instant), old
ones are purged, and a rotation replaces only the secret of the live token it was made
from."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from broker.audit import event
from broker.auth import digest_token, issue_token, rotate_token
from broker.store import AuditQuery, Store
from tests.broker.store.test_stores import _until, _until_changed


async def test_events_are_newest_first_filtered_and_paged_through_ties(store: Store):
    base = 1_800_000_000.0
    rows = [
        event(
            "api", "present" if i % 3 else "cleanup", f"n{i}", actor=f"t{i % 2}", at=base + i // 2
        )
        for i in range(10)
    ]  # pairs of events share an instant
    await store.add_audit_events(rows)
    everything = await store.audit_events(AuditQuery(limit=100))
    assert [e.target for e in everything] == [f"n{i}" for i in reversed(range(10))]
    ids = [e.id for e in everything]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 10

    paged = []
    before = None
    while True:
        page = await store.audit_events(AuditQuery(limit=3, before=before))
        paged += page
        if len(page) < 3:
            break
        before = (page[-1].at, page[-1].id or 0)
    assert paged == everything

    t0 = await store.audit_events(AuditQuery(actor="t0"))
    assert [e.target for e in t0] == ["n8", "n6", "n4", "n2", "n0"]
    cleanups = await store.audit_events(AuditQuery(action="cleanup"))
    assert [e.target for e in cleanups] == ["n9", "n6", "n3", "n0"]
    window = await store.audit_events(AuditQuery(since=base + 1, until=base + 3))
    assert [e.target for e in window] == ["n5", "n4", "n3", "n2"]
    assert await store.audit_events(AuditQuery(actor="t\x00")) == []


async def test_purge_deletes_only_events_before_the_cutoff(store: Store):
    now = time.time()
    await store.add_audit_events(
        [
            event("api", "present", f"n{age}", actor="a", at=now - age * 86400)
            for age in (1, 89, 91, 400)
        ]
    )
    assert await store.purge_audit(now - 90 * 86400) == 2
    assert [e.target for e in await store.audit_events(AuditQuery())] == ["n1", "n89"]


async def test_rotation_replaces_the_secret_of_that_live_token_only(store: Store):
    feed = store.changes()
    runner = None
    if feed is not None:

        async def ignore(_: object) -> None:
            return None

        runner = asyncio.create_task(feed.run(ignore))
        await _until(lambda: feed.connected)
    try:
        issued = issue_token("web1", ["example.test"], cidrs=["10.0.0.0/8"], tsig="hmac-sha256")
        await store.create_token(issued.record)
        before = await store.token_generation()
        assert before is not None
        rotated = rotate_token(issued.record)
        stored = await store.rotate_token("web1", rotated.record)
        assert stored == replace(issued.record, digest=digest_token(rotated.secret))
        assert stored.digest != issued.record.digest
        assert stored.tsig_secret == issued.record.tsig_secret
        await _until_changed(store, before)
        assert await store.token_by_key(issued.record.key) == stored

        renewed = rotate_token(stored, tsig=True)
        again = await store.rotate_token("web1", renewed.record)
        assert again is not None
        assert again.tsig_secret != issued.record.tsig_secret

        other = issue_token("web1", ["example.test"]).record  # same name, another key
        assert await store.rotate_token("web1", rotate_token(other).record) is None
        await store.revoke_token("web1", time.time())
        assert await store.rotate_token("web1", rotate_token(stored).record) is None
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
