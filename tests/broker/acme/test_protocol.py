"""The client's HTTP behaviour against a scripted CA (FakeCa): badNonce retried exactly
once with the error's nonce, problem documents as typed errors with Retry-After, bounded
polling, timeouts and network failures kept apart; TLS against real pebble. (rateLimited
answers: test_rate_limits.py.)"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from broker.acme import (
    AcmeClient,
    AcmeError,
    AcmeNetworkError,
    AcmeProblem,
    AcmeProtocolError,
    AcmeTimeoutError,
    BadNonceError,
    OrderNotReadyError,
    PollPolicy,
    PollTimeoutError,
    RateLimitedError,
    RejectedIdentifierError,
    Status,
    generate_account_key,
    ssl_context,
)
from tests.broker.acme.fakeca import ACCOUNT, FakeCa, Reply
from tests.peers import Pebble

pytestmark = pytest.mark.timeout(30)


def order_json(status: str) -> dict[str, object]:
    return {
        "status": status,
        "identifiers": [{"type": "dns", "value": "example.test"}],
        "authorizations": ["/authz/1"],
        "finalize": "/order/1/finalize",
    }


@pytest.fixture
async def ca() -> AsyncIterator[FakeCa]:
    fake = FakeCa()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client(ca: FakeCa) -> AsyncIterator[AcmeClient]:
    async with AcmeClient(ca.url, generate_account_key(), poll=PollPolicy(initial=0.01)) as acme:
        yield acme


async def test_bad_nonce_is_retried_once_with_the_nonce_the_error_carried(
    ca: FakeCa, client: AcmeClient
):
    rejected = Reply.problem(400, "badNonce", "stale", headers={"Replay-Nonce": "from-error"})
    ca.on("/account", rejected, ACCOUNT)
    account = await client.new_account()

    assert account.url == f"{ca.base}/account/1"
    sent = ca.sent_to("/account")
    assert len(sent) == 2
    assert sent[1].protected["nonce"] == "from-error"
    assert sent[0].protected["nonce"] != "from-error"
    assert client.bad_nonce_retries == 1


async def test_a_second_bad_nonce_in_a_row_is_raised(ca: FakeCa, client: AcmeClient):
    ca.on("/account", Reply.problem(400, "badNonce", "stale again"))
    with pytest.raises(BadNonceError) as failed:
        await client.new_account()
    assert len(ca.sent_to("/account")) == 2
    assert failed.value.detail == "stale again"
    assert client.bad_nonce_retries == 1


async def test_rate_limited_problem_carries_retry_after_and_subproblems(
    ca: FakeCa, client: AcmeClient
):
    ca.on("/account", ACCOUNT)
    subproblems = [
        {
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "not today",
            "identifier": {"type": "dns", "value": "bad.example.test"},
        }
    ]
    limited = Reply.problem(
        429, "rateLimited", "too many orders", subproblems=subproblems,
        headers={"Retry-After": "120"},
    )  # fmt: skip
    ca.on("/order", limited)
    with pytest.raises(RateLimitedError) as failed:
        await client.new_order(["Example.TEST.", "*.example.test"])

    problem = failed.value
    assert (problem.status, problem.retry_after, problem.code) == (429, 120.0, "rateLimited")
    assert problem.url == f"{ca.base}/order"
    assert problem.subproblems[0].identifier == "bad.example.test"
    assert problem.subproblems[0].code == "rejectedIdentifier"
    assert "retry after 120 s" in str(problem)
    assert "bad.example.test: rejectedIdentifier: not today" in str(problem)
    assert ca.sent_to("/order")[0].payload == {
        "identifiers": [
            {"type": "dns", "value": "example.test"},
            {"type": "dns", "value": "*.example.test"},
        ]
    }


async def test_retry_after_as_an_http_date_becomes_seconds(ca: FakeCa, client: AcmeClient):
    when = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    ca.on("/account", Reply.problem(503, "rateLimited", "busy", headers={"Retry-After": when}))
    with pytest.raises(RateLimitedError) as failed:
        await client.new_account()
    assert failed.value.retry_after is not None
    assert 3500 < failed.value.retry_after <= 3600


async def test_problem_types_map_to_their_classes_and_unknown_ones_to_the_base(
    ca: FakeCa, client: AcmeClient
):
    ca.on("/account", ACCOUNT)
    ca.on("/order", Reply.problem(400, "rejectedIdentifier", "no"), Reply.problem(400, "caa"))
    with pytest.raises(RejectedIdentifierError):
        await client.new_order(["example.test"])
    with pytest.raises(AcmeProblem) as other:
        await client.new_order(["example.test"])
    assert type(other.value) is AcmeProblem
    assert other.value.code == "caa"


async def test_polling_honours_retry_after_but_never_past_its_deadline(ca: FakeCa):
    pending = Reply(200, order_json("pending"), {"Retry-After": "3600"})
    ca.on("/account", ACCOUNT)
    ca.on("/order/1", pending)
    policy = PollPolicy(timeout=0.3)
    async with AcmeClient(ca.url, generate_account_key(), poll=policy) as client:
        with pytest.raises(PollTimeoutError) as failed:
            await client.poll_order(f"{ca.base}/order/1")
    assert failed.value.status == "pending"
    assert isinstance(failed.value, TimeoutError)
    assert len(ca.sent_to("/order/1")) == 2


async def test_polling_returns_once_the_order_is_settled(ca: FakeCa, client: AcmeClient):
    ca.on("/account", ACCOUNT)
    ca.on(
        "/order/1",
        Reply(200, order_json("processing"), {"Retry-After": "0"}),
        Reply(200, order_json("pending")),
        Reply(200, order_json("ready")),
    )
    order = await client.poll_order(f"{ca.base}/order/1")
    assert order.status is Status.READY
    assert order.finalize == f"{ca.base}/order/1/finalize"
    assert len(ca.sent_to("/order/1")) == 3


async def test_finalizing_an_order_that_is_not_ready_is_order_not_ready(
    ca: FakeCa, client: AcmeClient
):
    ca.on("/account", ACCOUNT)
    ca.on("/order/1", Reply(200, order_json("pending")))
    ca.on("/order/1/finalize", Reply.problem(403, "orderNotReady", "authorizations pending"))
    order = await client.get_order(f"{ca.base}/order/1")
    with pytest.raises(OrderNotReadyError):
        await client.finalize(order, b"csr")
    assert ca.sent_to("/order/1/finalize")[0].payload == {"csr": "Y3Ny"}


async def test_a_slow_ca_is_a_timeout_error(ca: FakeCa):
    ca.on("/account", Reply(201, {"status": "valid"}, {"Location": "/a"}, delay=2))
    async with AcmeClient(ca.url, generate_account_key(), timeout=0.2) as client:
        with pytest.raises(AcmeTimeoutError) as failed:
            await client.new_account()
    assert failed.value.url == f"{ca.base}/account"
    assert failed.value.seconds == 0.2
    assert isinstance(failed.value, TimeoutError)


async def test_an_unreachable_ca_is_a_network_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AcmeClient(f"http://127.0.0.1:{port}/dir", generate_account_key()) as client:
        with pytest.raises(AcmeNetworkError) as failed:
            await client.directory()
    assert isinstance(failed.value, OSError)
    assert not isinstance(failed.value, TimeoutError)


async def test_an_error_without_a_problem_document_is_a_protocol_error(
    ca: FakeCa, client: AcmeClient
):
    ca.on("/account", Reply(502, "<html>Bad Gateway</html>"))
    with pytest.raises(AcmeProtocolError) as failed:
        await client.new_account()
    assert failed.value.status == 502
    assert "Bad Gateway" in str(failed.value)


async def test_renewal_info_needs_a_ca_that_offers_it(ca: FakeCa, client: AcmeClient):
    with pytest.raises(AcmeError, match="offers no renewalInfo"):
        await client.renewal_info("a.b")


async def test_tls_is_verified_against_the_given_bundle_or_ssl_cert_file(
    pebble: Pebble, monkeypatch: pytest.MonkeyPatch
):
    async with AcmeClient(pebble.url, generate_account_key()) as untrusting:
        with pytest.raises(AcmeNetworkError, match="certificate verify failed"):
            await untrusting.directory()
    key = generate_account_key()
    async with AcmeClient(pebble.url, key, ssl=ssl_context(pebble.ca_file)) as trusting:
        assert (await trusting.directory()).new_order.startswith("https://127.0.0.1:")
    monkeypatch.setenv("SSL_CERT_FILE", str(pebble.ca_file))
    async with AcmeClient(pebble.url, key) as from_environment:
        await from_environment.directory()


async def test_finalize_keeps_the_retry_after_of_a_processing_order(ca: FakeCa, client: AcmeClient):
    ca.on("/account", ACCOUNT)
    ca.on("/order/1", Reply(200, order_json("ready")))
    ca.on("/order/1/finalize", Reply(200, order_json("processing"), {"Retry-After": "7"}))
    order = await client.get_order(f"{ca.base}/order/1")
    processing = await client.finalize(order, b"csr")
    assert (processing.status, processing.retry_after) == (Status.PROCESSING, 7.0)
    assert order.retry_after is None


async def test_a_key_change_needs_a_ca_that_offers_it(ca: FakeCa, client: AcmeClient):
    with pytest.raises(AcmeError, match="offers no keyChange"):
        await client.change_key(generate_account_key())
    assert ca.received == []
