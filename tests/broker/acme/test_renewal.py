"""Renewal timing and ``replaces``: the one-third rule against pebble 2.4 (whose
directory has no renewalInfo), and RFC 9773 through AriProxy, which adds renewalInfo in
front of the same real pebble."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from cryptography import x509

from broker.acme import (
    AcmeClient,
    BrokerApiSolver,
    IssuedCertificate,
    ari_certificate_id,
    issue,
    renewal_due,
)
from broker.acme.renewal import MAX_RETRY_AFTER, MIN_RETRY_AFTER
from tests.broker.acme.ariproxy import AriProxy
from tests.broker.acme.conftest import MakeClient
from tests.peers import Pebble

pytestmark = pytest.mark.timeout(90)

NAMES = ["*.example.test", "example.test"]


@pytest.fixture
async def proxied(proxy: AriProxy, make_client: MakeClient) -> AcmeClient:
    return await make_client(url=proxy.url)


def leaf(issued: IssuedCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.certificate_pem.encode())


async def test_without_renewal_info_a_third_of_the_lifetime_left_is_the_renewal_time(
    pebble: Pebble, client: AcmeClient, solver: BrokerApiSolver
):
    assert (await client.directory()).renewal_info is None
    issued = await issue(client, NAMES, solver)
    lifetime = issued.not_after - issued.not_before

    decision = await renewal_due(issued.certificate_pem, client)
    assert not decision.due
    assert decision.at == issued.not_after - lifetime / 3
    assert decision.retry_after is None
    assert "one third" in decision.reason
    later = await renewal_due(leaf(issued), client, now=decision.at + timedelta(seconds=1))
    assert later.due
    soon = await renewal_due(leaf(issued), client, now=decision.at - timedelta(hours=1),
                             within=2 * 3600)  # fmt: skip
    assert soon.due


async def test_replaces_is_left_out_when_the_ca_offers_no_renewal_info(
    proxy: AriProxy, make_client: MakeClient, solver: BrokerApiSolver
):
    proxy.offer_renewal_info = False
    client = await make_client(url=proxy.url)
    first = await issue(client, ["example.test"], solver)
    await issue(client, ["example.test"], solver, replaces=first.certificate_pem)
    assert (
        proxy.new_orders
        == [
            {"identifiers": [{"type": "dns", "value": "example.test"}]},
        ]
        * 2
    )


async def test_renewal_window_in_the_past_is_due_now_and_the_new_order_replaces_it(
    proxy: AriProxy, proxied: AcmeClient, solver: BrokerApiSolver
):
    issued = await issue(proxied, NAMES, solver)
    certificate_id = ari_certificate_id(issued.certificate_pem)
    proxy.window_start = datetime.now(UTC) - timedelta(days=2)
    proxy.window_end = datetime.now(UTC) - timedelta(days=1)
    proxy.retry_after = "5"

    decision = await renewal_due(issued.fullchain_pem, proxied)
    assert decision.due
    assert proxy.asked == [certificate_id]
    assert decision.retry_after == MIN_RETRY_AFTER
    assert decision.explanation_url == "https://ca.example.test/why"

    renewed = await issue(proxied, NAMES, solver, replaces=leaf(issued))
    assert proxy.new_orders[-1]["replaces"] == certificate_id
    assert "replaces" not in proxy.new_orders[0]
    assert leaf(renewed).serial_number != leaf(issued).serial_number


async def test_renewal_time_is_chosen_inside_a_future_window(
    proxy: AriProxy, proxied: AcmeClient, solver: BrokerApiSolver
):
    issued = await issue(proxied, ["example.test"], solver)
    now = datetime.now(UTC)
    proxy.window_start, proxy.window_end = now + timedelta(days=3), now + timedelta(days=4)
    proxy.retry_after = format_datetime(now + timedelta(days=3), usegmt=True)

    decision = await renewal_due(issued.certificate_pem, proxied, now=now, rng=random.Random(7))
    assert not decision.due
    assert proxy.window_start <= decision.at <= proxy.window_end
    assert decision.retry_after == MAX_RETRY_AFTER
    assert "renewalInfo window" in decision.reason
    inside = await renewal_due(
        issued.certificate_pem, proxied, now=proxy.window_end + timedelta(seconds=1)
    )
    assert inside.due


async def test_failing_renewal_info_falls_back_to_the_one_third_rule(
    proxy: AriProxy, proxied: AcmeClient, solver: BrokerApiSolver
):
    issued = await issue(proxied, ["example.test"], solver)
    proxy.renewal_status = 500

    decision = await renewal_due(issued.certificate_pem, proxied)
    assert not decision.due
    lifetime = issued.not_after - issued.not_before
    assert decision.at == issued.not_after - lifetime / 3
    assert "renewalInfo failed" in decision.reason
    assert "serverInternal" in decision.reason
