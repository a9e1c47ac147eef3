"""The ACME client's dns-persist-01: the account's standing grant made (or reused) through
the broker, served everywhere, then the challenge answered with ``{}``; dns-01 where the
CA offers no dns-persist-01.

Pebble 2.4 (Debian) has no dns-persist-01, so the CA side here is a STUB: FakeCa, a
scripted ACME server on loopback, answering authorizations that offer the challenge
(with ``issuer-domain-names``, as draft-ietf-acme-dns-persist describes it). Only the
client's side is tested against it; the broker side is the real one. A real pebble
shows the fallback to dns-01."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.acme import (
    AcmeClient,
    AcmeEvent,
    BrokerApiSolver,
    EventKind,
    PollPolicy,
    generate_account_key,
    issue,
)
from broker.acme.issue import authorize
from broker.persist import PersistGrant
from tests.broker.acme.fakeca import FakeCa, Reply
from tests.support import Running

ACCOUNT_URL = "https://ca.example.net/acme/acct/1"
ISSUER = "ca.example.net"


def authz(base: str, name: str, *, wildcard: bool, persist: bool, number: int) -> dict[str, Any]:
    challenges: list[dict[str, Any]] = [
        {"type": "dns-01", "url": f"{base}/chall/d{number}", "status": "pending",
         "token": f"token-{number}-0123456789abcdefghij"},
    ]  # fmt: skip
    if persist:
        challenges.insert(
            0,
            {"type": "dns-persist-01", "url": f"{base}/chall/p{number}", "status": "pending",
             "issuer-domain-names": [ISSUER, "other-name.example.net"]},
        )  # fmt: skip
    body: dict[str, Any] = {
        "status": "pending",
        "identifier": {"type": "dns", "value": name},
        "challenges": challenges,
    }
    if wildcard:
        body["wildcard"] = True
    return body


def valid(pending: dict[str, Any]) -> dict[str, Any]:
    return {**pending, "status": "valid"}


def processing(ca: FakeCa, kind: str, path: str) -> Reply:
    return Reply(200, {"type": kind, "status": "processing", "url": f"{ca.base}{path}"})


@pytest.fixture
async def ca() -> AsyncIterator[FakeCa]:
    """STUB CA (see the module's docstring): account 1 at an https URL."""
    fake = FakeCa()
    await fake.start()
    fake.on("/account", Reply(201, {"status": "valid"}, {"Location": ACCOUNT_URL}))
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client(ca: FakeCa) -> AsyncIterator[AcmeClient]:
    async with AcmeClient(ca.url, generate_account_key(), poll=PollPolicy(initial=0.01)) as acme:
        await acme.new_account()
        yield acme


async def test_persist_grant_is_served_before_the_challenge_is_answered(
    running: Running, ca: FakeCa, client: AcmeClient
):
    token = await running.token("acme", ["example.test"], persist=True)
    apex = authz(ca.base, "example.test", wildcard=False, persist=True, number=1)
    star = authz(ca.base, "example.test", wildcard=True, persist=True, number=2)
    ca.on("/authz/1", Reply(200, apex), Reply(200, valid(apex)))
    ca.on("/authz/2", Reply(200, star), Reply(200, valid(star)))
    for path in ("/chall/p1", "/chall/p2"):
        ca.on(path, processing(ca, "dns-persist-01", path))
    events: list[AcmeEvent] = []
    async with BrokerApiSolver(running.url, token) as solver:
        authorizations = [await client.get_authorization(f"{ca.base}/authz/{n}") for n in (1, 2)]
        await authorize(
            client, authorizations, solver, on_event=events.append, persist=solver,
            propagation_timeout=10,
        )  # fmt: skip

    assert [r.payload for r in ca.sent_to("/chall/p1") + ca.sent_to("/chall/p2")] == [{}, {}]
    assert ca.sent_to("/chall/d1") == ca.sent_to("/chall/d2") == []
    kinds = [event.kind for event in events]
    assert kinds.count(EventKind.PERSIST_GRANTED) == 1
    assert kinds.index(EventKind.PERSIST_GRANTED) < kinds.index(EventKind.CHALLENGE_ANSWERED)
    assert EventKind.PRESENTING not in kinds
    granted = next(e for e in events if e.kind is EventKind.PERSIST_GRANTED)
    assert "served by" in granted.detail
    served = await running.txt("_validation-persist.example.test")
    assert [PersistGrant.parse(value) for value in served[1]] == [
        PersistGrant(ISSUER, ACCOUNT_URL, wildcard=True)
    ]
    assert (await running.txt("_acme-challenge.example.test"))[1] == []


async def test_an_existing_grant_is_reused(running: Running, ca: FakeCa, client: AcmeClient):
    token = await running.token("acme", ["www.example.test"], persist=True)
    async with BrokerApiSolver(running.url, token) as solver:
        for number in (1, 2):
            pending = authz(ca.base, "www.example.test", wildcard=False, persist=True,
                            number=number)  # fmt: skip
            ca.on(f"/authz/{number}", Reply(200, pending), Reply(200, valid(pending)))
            path = f"/chall/p{number}"
            ca.on(path, processing(ca, "dns-persist-01", path))
            authorization = await client.get_authorization(f"{ca.base}/authz/{number}")
            await authorize(client, [authorization], solver, persist=solver)
    grants = await running.broker.store.live_under("_validation-persist")
    assert len(grants) == 1
    assert [r.payload for r in ca.sent_to("/chall/p2")] == [{}]


async def test_without_dns_persist_01_the_client_falls_back_to_dns_01(
    running: Running, ca: FakeCa, client: AcmeClient
):
    token = await running.token("acme", ["www.example.test"], persist=True)
    pending = authz(ca.base, "www.example.test", wildcard=False, persist=False, number=1)
    ca.on("/authz/1", Reply(200, pending), Reply(200, valid(pending)))
    ca.on("/chall/d1", processing(ca, "dns-01", "/chall/d1"))
    events: list[AcmeEvent] = []
    async with BrokerApiSolver(running.url, token) as solver:
        authorization = await client.get_authorization(f"{ca.base}/authz/1")
        await authorize(
            client, [authorization], solver, on_event=events.append, persist=solver,
            propagation_timeout=10,
        )  # fmt: skip
    fallback = [e for e in events if e.kind is EventKind.PERSIST_UNAVAILABLE]
    assert len(fallback) == 1
    assert "offers no dns-persist-01 here (only dns-01): answering dns-01" in fallback[0].detail
    assert [r.payload for r in ca.sent_to("/chall/d1")] == [{}]
    assert EventKind.CLEANED_UP in [e.kind for e in events]
    assert await running.broker.store.live_under("_validation-persist") == []


async def test_pebble_offers_no_dns_persist_01_so_issue_uses_dns_01(
    running: Running, make_client: Any
):
    """Pebble 2.4 has no dns-persist-01: ``issue(persist=...)`` says so and issues by dns-01."""
    client = await make_client()
    token = await running.token("acme", ["www.example.test"], persist=True)
    events: list[AcmeEvent] = []
    async with BrokerApiSolver(running.url, token) as solver:
        issued = await issue(
            client, ["www.example.test"], solver, on_event=events.append, persist=solver
        )
    assert issued.names == ("www.example.test",)
    assert [e.domain for e in events if e.kind is EventKind.PERSIST_UNAVAILABLE] == [
        "www.example.test"
    ]
    assert await running.broker.store.live_under("_validation-persist") == []
