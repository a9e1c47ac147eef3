"""Accounts at real pebble: create and find, External Account Binding, pebble's nonce
rejection (badNonce retried exactly once with the nonce from the error), key rollover
and deactivation."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from broker.acme import (
    AccountDoesNotExistError,
    AcmeClient,
    BadNonceError,
    BrokerApiSolver,
    ExternalAccountBinding,
    ExternalAccountRequiredError,
    KeyType,
    MalformedError,
    ServerInternalError,
    Status,
    UnauthorizedError,
    generate_account_key,
    issue,
)
from broker.acme.jws import b64url_decode
from tests.broker.acme.conftest import MakeClient, PebbleStarter
from tests.peers import Pebble

pytestmark = pytest.mark.timeout(90)

# The keys of pebble's example config (pebble-config-external-account-bindings.json).
EAB_KEYS = {
    "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    "kid-2": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
}


async def test_new_account_is_found_again_by_its_key(pebble: Pebble, make_client: MakeClient):
    client = await make_client(register=False)
    created = await client.new_account(contact=["mailto:ops@example.test"])
    assert created.status is Status.VALID
    assert created.contact == ("mailto:ops@example.test",)

    async with AcmeClient(pebble.url, client.key, ssl=pebble.ssl_context()) as again:
        found = await again.find_account()
        assert found.url == created.url == again.account_url
        assert (await again.new_account()).url == created.url


async def test_finding_an_unknown_key_is_account_does_not_exist(make_client: MakeClient):
    client = await make_client(register=False)
    with pytest.raises(AccountDoesNotExistError) as missing:
        await client.find_account()
    assert missing.value.code == "accountDoesNotExist"
    assert missing.value.status == 400
    assert client.account_url is None


async def test_external_account_binding_is_required_and_accepted(
    start_pebble: PebbleStarter, make_client: MakeClient, solver: BrokerApiSolver
):
    ca = await start_pebble(eab_keys=EAB_KEYS)
    client = await make_client(KeyType.EC384, register=False, ca=ca)
    assert (await client.directory()).external_account_required

    with pytest.raises(ExternalAccountRequiredError):
        await client.new_account()
    wrong = ExternalAccountBinding("kid-1", EAB_KEYS["kid-2"])
    with pytest.raises(UnauthorizedError):
        await client.new_account(eab=wrong)
    account = await client.new_account(eab=ExternalAccountBinding("kid-1", EAB_KEYS["kid-1"]))
    assert account.status is Status.VALID
    issued = await issue(client, ["example.test"], solver)
    assert issued.names == ("example.test",)


class PostLog:
    """Every POST the session sends: the nonce in its JWS, the answer's status and nonce."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._start)
        self.trace.on_request_chunk_sent.append(self._chunk)
        self.trace.on_request_end.append(self._end)

    async def _start(self, _: Any, context: SimpleNamespace, params: Any) -> None:
        if params.method == "POST":
            self.posts.append({"url": str(params.url)})

    async def _chunk(self, _: Any, context: SimpleNamespace, params: Any) -> None:
        protected = json.loads(b64url_decode(json.loads(params.chunk)["protected"]))
        self.posts[-1]["sent"] = protected["nonce"]

    async def _end(self, _: Any, context: SimpleNamespace, params: Any) -> None:
        if params.method == "POST":
            self.posts[-1]["status"] = params.response.status
            self.posts[-1]["answered"] = params.response.headers.get("Replay-Nonce")


async def test_bad_nonce_is_retried_exactly_once_with_the_nonce_of_the_error(
    start_pebble: PebbleStarter,
):
    ca = await start_pebble(nonce_reject_percent=50)
    log = PostLog()
    connector = aiohttp.TCPConnector(ssl=ca.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector, trace_configs=[log.trace]) as session,
        AcmeClient(ca.url, generate_account_key(), session=session) as client,
    ):
        calls = failures = 0
        while client.account_url is None or calls < 30:
            calls += 1
            try:
                if client.account_url is None:
                    await client.new_account()
                else:
                    await client.find_account()
            except BadNonceError:
                failures += 1

    assert client.bad_nonce_retries > 0
    assert len(log.posts) == calls + client.bad_nonce_retries
    seen_calls = seen_failures = index = 0
    while index < len(log.posts):
        seen_calls += 1
        first = log.posts[index]
        index += 1
        if first["status"] != 400:
            continue
        retry = log.posts[index]
        index += 1
        assert retry["url"] == first["url"]
        assert retry["sent"] == first["answered"], "the retry uses the error's nonce"
        seen_failures += retry["status"] == 400
    assert (seen_calls, seen_failures) == (calls, failures)


async def test_key_rollover_moves_the_account_to_the_new_key(
    pebble: Pebble, make_client: MakeClient, solver: BrokerApiSolver
):
    client = await make_client()
    account_url, old_key = client.account_url, client.key
    new_key = generate_account_key(KeyType.EC384)

    await client.change_key(new_key)

    assert client.key is new_key
    assert client.account_url == account_url
    issued = await issue(client, ["example.test"], solver)
    assert issued.names == ("example.test",)
    async with AcmeClient(pebble.url, new_key, ssl=pebble.ssl_context()) as fresh:
        assert (await fresh.find_account()).url == account_url
    async with AcmeClient(pebble.url, old_key, ssl=pebble.ssl_context()) as stale:
        with pytest.raises(AccountDoesNotExistError):
            await stale.find_account()


async def test_key_rollover_finds_the_account_first_when_its_url_is_unknown(
    pebble: Pebble, make_client: MakeClient
):
    registered = await make_client(KeyType.RSA2048)
    new_key = generate_account_key()
    async with AcmeClient(pebble.url, registered.key, ssl=pebble.ssl_context()) as client:
        await client.change_key(new_key)
        assert client.account_url == registered.account_url
    async with AcmeClient(pebble.url, new_key, ssl=pebble.ssl_context()) as fresh:
        assert (await fresh.find_account()).url == registered.account_url


async def test_a_deactivated_account_can_order_no_more(make_client: MakeClient):
    client = await make_client()
    account = await client.deactivate_account()

    assert account.status is Status.DEACTIVATED
    assert account.url == client.account_url
    with pytest.raises(UnauthorizedError) as refused:
        await client.new_order(["example.test"])
    assert refused.value.status == 403
    assert "deactivated" in refused.value.detail
    with pytest.raises(UnauthorizedError, match="deactivated"):
        await client.find_account()


async def test_the_old_key_naming_the_account_by_its_url_is_refused_after_rollover(
    pebble: Pebble, make_client: MakeClient
):
    client = await make_client()
    old_key, account_url = client.key, client.account_url
    await client.change_key(generate_account_key())

    async with AcmeClient(
        pebble.url, old_key, account_url=account_url, ssl=pebble.ssl_context()
    ) as stale:
        with pytest.raises(MalformedError) as refused:
            await stale.new_order(["example.test"])
    assert refused.value.status == 400
    assert "JWS verification error" in refused.value.detail


async def test_a_refused_rollover_leaves_the_client_on_its_old_key(make_client: MakeClient):
    client = await make_client()
    other = await make_client()
    key = client.key

    with pytest.raises(ServerInternalError, match="already in use"):
        await client.change_key(other.key)

    assert client.key is key
    assert (await client.new_order(["example.test"])).status is Status.PENDING
