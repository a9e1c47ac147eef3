"""OIDC replay records and one-shot tokens in both stores: an exchanged ID token is
refused again until it expires (whichever replica asks), and a one-shot token binds to its
first challenge and is spent by that challenge's cleanup."""

from __future__ import annotations

from broker.auth import issue_token
from broker.store import Store


async def test_an_id_token_is_claimed_once_until_it_expires(store: Store):
    now = 1_800_000_000.0
    assert await store.claim_replay("github", "jti:a", now + 300, now)
    assert not await store.claim_replay("github", "jti:a", now + 300, now + 10)
    assert await store.claim_replay("gitlab", "jti:a", now + 300, now)  # another issuer
    assert await store.claim_replay("github", "jti:b", now + 300, now)
    # once expired, the same jti may be recorded again (its token is refused as expired)
    assert await store.claim_replay("github", "jti:a", now + 900, now + 300)
    assert not await store.claim_replay("github", "jti:a", now + 900, now + 301)


async def test_expired_replay_records_are_purged(store: Store):
    now = 1_800_000_000.0
    for jti, expires in (("old", now - 10), ("older", now - 100), ("live", now + 100)):
        await store.claim_replay("github", jti, expires, now - 200)
    assert await store.purge_replays(now) == 2
    assert not await store.claim_replay("github", "live", now + 100, now)
    assert await store.claim_replay("github", "old", now + 100, now)


async def test_a_one_shot_token_binds_to_its_first_challenge_and_its_cleanup_spends_it(
    store: Store,
):
    issued = issue_token("once", ["example.test"], one_shot=True)
    await store.create_token(issued.record)
    key = issued.record.key
    stored = await store.token_by_key(key)
    assert stored is not None
    assert stored.one_shot == ""
    first = "_acme-challenge.example.test. v1"
    assert await store.bind_one_shot(key, first)
    assert await store.bind_one_shot(key, first)  # a repeated present
    assert not await store.bind_one_shot(key, "_acme-challenge.example.test. v2")
    assert not await store.spend_one_shot(key, "_acme-challenge.example.test. v2", 1.0)
    assert await store.spend_one_shot(key, first, 2.0)
    assert not await store.spend_one_shot(key, first, 3.0)
    spent = await store.token_by_key(key)
    assert spent is not None
    assert spent.revoked_at == 2.0
    assert not await store.bind_one_shot(key, first)


async def test_ordinary_tokens_are_never_bound(store: Store):
    issued = issue_token("many", ["example.test"])
    await store.create_token(issued.record)
    assert (await store.token_by_key(issued.record.key)).one_shot is None  # type: ignore[union-attr]
    assert not await store.bind_one_shot(issued.record.key, "x v")
    assert not await store.spend_one_shot(issued.record.key, "x v", 1.0)


async def test_exchanged_tokens_are_deleted_once_long_expired(store: Store):
    now = 1_800_000_000.0
    for name, lifetime in (("oidc-gh-1", 60.0), ("oidc-gh-2", 7200.0), ("oidcx", 60.0)):
        await store.create_token(
            issue_token(name, ["example.test"], lifetime=lifetime, now=now).record
        )
    await store.create_token(issue_token("oidc-forever", ["example.test"], now=now).record)
    assert await store.purge_tokens("oidc-", now + 3600) == 1
    assert [t.name for t in await store.list_tokens()] == ["oidc-forever", "oidc-gh-2", "oidcx"]
    assert await store.purge_tokens("oidc_", now + 3600) == 0  # '_' is no wildcard
