"""Certificate profiles: ``meta.profiles`` read from the directory, the chosen profile
sent in newOrder (through AriProxy in front of real pebble, which records newOrder
payloads), unknown profiles refused before any newOrder, and a CA's invalidProfile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.acme import (
    AcmeClient,
    BrokerApiSolver,
    Directory,
    InvalidProfileError,
    Order,
    ProfileUnavailableError,
    generate_account_key,
    generate_private_key,
    issue,
    make_csr,
    sign_csr,
)
from tests.broker.acme.ariproxy import AriProxy
from tests.broker.acme.conftest import MakeClient
from tests.broker.acme.fakeca import FakeCa, Reply
from tests.peers import Pebble

pytestmark = pytest.mark.timeout(90)

LETS_ENCRYPT_PROFILES = {
    "classic": "https://letsencrypt.org/docs/profiles#classic",
    "shortlived": "https://letsencrypt.org/docs/profiles#shortlived",
    "tlsserver": "https://letsencrypt.org/docs/profiles#tlsserver",
}
ENDPOINTS = {
    "newNonce": "https://ca/nonce",
    "newAccount": "https://ca/account",
    "newOrder": "https://ca/order",
    "revokeCert": "https://ca/revoke",
}


@pytest.fixture
async def proxy(pebble: Pebble) -> AsyncIterator[AriProxy]:
    ari = AriProxy(pebble, profiles=dict(LETS_ENCRYPT_PROFILES))
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


def test_directory_profiles_are_read_from_meta_and_read_only():
    directory = Directory.from_json(
        {**ENDPOINTS, "meta": {"profiles": {**LETS_ENCRYPT_PROFILES, "broken": 7}}},
        "https://ca/dir",
    )
    assert dict(directory.profiles) == LETS_ENCRYPT_PROFILES
    assert "shortlived" in directory.profiles
    assert "broken" not in directory.profiles
    assert len(directory.profiles) == 3
    assert sorted(directory.profiles.items())[0] == ("classic", LETS_ENCRYPT_PROFILES["classic"])
    with pytest.raises(TypeError):
        directory.profiles["custom"] = "x"  # type: ignore[index]
    assert hash(directory) == hash(Directory.from_json({**ENDPOINTS}, "https://ca/dir"))


@pytest.mark.parametrize(
    "meta",
    [None, {}, {"profiles": None}, {"profiles": ["classic"]}, {"profiles": "classic"}],
)
def test_directory_without_usable_profiles_offers_none(meta: object):
    directory = Directory.from_json({**ENDPOINTS, "meta": meta}, "https://ca/dir")
    assert len(directory.profiles) == 0
    assert "classic" not in directory.profiles
    assert Directory("u", "n", "a", "o", "r").profiles == {}


async def test_a_profile_the_ca_offers_is_sent_in_new_order_and_the_certificate_issued(
    proxy: AriProxy, make_client: MakeClient, solver: BrokerApiSolver
):
    client = await make_client(url=proxy.url)
    assert dict((await client.directory()).profiles) == LETS_ENCRYPT_PROFILES

    issued = await issue(client, ["example.test"], solver, profile="shortlived")

    assert issued.names == ("example.test",)
    assert proxy.new_orders == [
        {"identifiers": [{"type": "dns", "value": "example.test"}], "profile": "shortlived"}
    ]


async def test_without_a_profile_none_is_sent(
    proxy: AriProxy, make_client: MakeClient, solver: BrokerApiSolver
):
    client = await make_client(url=proxy.url)
    await issue(client, ["example.test"], solver)
    assert "profile" not in proxy.new_orders[0]


async def test_an_unknown_profile_is_refused_before_any_new_order(
    proxy: AriProxy, make_client: MakeClient, solver: BrokerApiSolver
):
    client = await make_client(url=proxy.url)
    csr = make_csr(generate_private_key(), ["example.test"])
    with pytest.raises(ProfileUnavailableError) as refused:
        await sign_csr(client, csr, solver, profile="tlsclient")

    assert refused.value.profile == "tlsclient"
    assert refused.value.offered == ("classic", "shortlived", "tlsserver")
    assert "it offers: classic, shortlived, tlsserver" in str(refused.value)
    assert proxy.new_orders == []


async def test_a_profile_at_a_ca_that_offers_none_is_refused(
    proxy: AriProxy, make_client: MakeClient
):
    proxy.profiles = None
    client = await make_client(url=proxy.url)
    with pytest.raises(ProfileUnavailableError) as refused:
        await client.new_order(["example.test"], profile="classic")

    assert refused.value.offered == ()
    assert "offers no profiles" in str(refused.value)
    assert proxy.new_orders == []


async def test_a_listed_profile_the_ca_refuses_is_invalid_profile_error():
    ca = FakeCa(profiles={"classic": "https://ca/classic", "shortlived": "https://ca/short"})
    await ca.start()
    try:
        ca.on("/account", Reply(201, {"status": "valid"}, {"Location": "/account/1"}))
        refusal = Reply.problem(400, "invalidProfile", "shortlived is not enabled for you")
        ca.on("/order", refusal)
        async with AcmeClient(ca.url, generate_account_key()) as client:
            with pytest.raises(InvalidProfileError) as refused:
                await client.new_order(["example.test"], profile="shortlived")
    finally:
        await ca.stop()

    assert refused.value.code == "invalidProfile"
    assert refused.value.detail == "shortlived is not enabled for you"
    assert ca.sent_to("/order")[0].payload == {
        "identifiers": [{"type": "dns", "value": "example.test"}],
        "profile": "shortlived",
    }


async def test_the_order_records_the_profile_the_ca_returns():
    ca = FakeCa(profiles={"shortlived": "https://ca/short"})
    await ca.start()
    try:
        ca.on("/account", Reply(201, {"status": "valid"}, {"Location": "/account/1"}))
        order = {
            "status": "pending",
            "identifiers": [{"type": "dns", "value": "example.test"}],
            "authorizations": ["/authz/1"],
            "finalize": "/order/1/finalize",
            "profile": "shortlived",
        }
        ca.on("/order", Reply(201, order, {"Location": "/order/1"}))
        async with AcmeClient(ca.url, generate_account_key()) as client:
            created = await client.new_order(["example.test"], profile="shortlived")
    finally:
        await ca.stop()

    assert created.profile == "shortlived"
    assert created.url == f"{ca.base}/order/1"
    without = {key: value for key, value in order.items() if key != "profile"}
    assert Order.from_json(without, "https://ca/order/2").profile is None
