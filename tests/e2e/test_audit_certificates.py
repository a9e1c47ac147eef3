"""The audit log of the broker's own ACME client against pebble: a certificate order is
recorded when submitted, each of its challenge values when presented and cleaned up (face
``acme``, actor the order's owner), and the order when issued and when renewed."""

from __future__ import annotations

import time

import pytest

from broker.store import AuditQuery, OrderState
from tests.e2e.test_issuance import _until_order, make_csr
from tests.e2e.world import World
from tests.support import Api

pytestmark = pytest.mark.timeout(240)


async def test_an_order_its_challenges_and_its_renewal_are_audited(world: World, openapi):
    api = Api(world.running, openapi)
    broker = world.running.broker
    token = await world.running.token("web1", ["www.example.test"])
    status, order = await api.call(
        "POST", "/v1/certificates", token,
        json={"csr": make_csr("www.example.test"), "renew": True, "wait": True, "timeout": 60},
    )  # fmt: skip
    assert (status, order["state"]) == (200, "valid")
    now = time.time()
    await broker.store.finish_order(
        order["id"], OrderState.VALID, now,
        fullchain_pem=order["fullchain_pem"], validity=(now - 200, now + 100),
    )  # fmt: skip
    await _until_order(broker.store, order["id"], lambda o: o.renewals == 1)
    assert broker.audit is not None
    await broker.audit.drain()

    events = await broker.store.audit_events(AuditQuery(actor="web1"))
    fqdn = "_acme-challenge.www.example.test."
    assert [(e.face, e.action, e.target, e.result) for e in reversed(events)] == [
        ("api", "certificate.order", order["id"], "ok"),
        ("acme", "present", fqdn, "ok"),
        ("acme", "cleanup", fqdn, "ok"),
        ("acme", "certificate.issued", order["id"], "ok"),
        ("acme", "present", fqdn, "ok"),
        ("acme", "cleanup", fqdn, "ok"),
        ("acme", "certificate.renewed", order["id"], "ok"),
    ]
    assert {e.source for e in events if e.face == "acme"} == {"-"}
