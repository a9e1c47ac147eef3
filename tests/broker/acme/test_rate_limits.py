"""rateLimited answers: the same request signed again with a fresh nonce after the CA's
Retry-After while the waits stay within the client's bound, raised at once otherwise.
Against real pebble behind AriProxy (which answers chosen newOrders with 429, as a CA
over its limit does) and against FakeCa for the edges (HTTP-date Retry-After, none at
all, the retry count). Waits are recorded by the ``sleeps`` fixture, not slept."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from broker.acme import (
    AcmeClient,
    BrokerApiSolver,
    RateLimitedError,
    Status,
    generate_account_key,
    issue,
)
from tests.broker.acme.ariproxy import AriProxy
from tests.broker.acme.conftest import MakeClient
from tests.broker.acme.fakeca import ACCOUNT, FakeCa, Reply
from tests.peers import Pebble

pytestmark = pytest.mark.timeout(90)

EXAMPLE = [{"type": "dns", "value": "example.test"}]


@pytest.fixture
async def ca() -> AsyncIterator[FakeCa]:
    fake = FakeCa()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def rate_limited(retry_after: str | None) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Reply.problem(429, "rateLimited", "too many new accounts", headers=headers)


def rate_limit_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "broker.acme.transport" and record.levelno == logging.WARNING
    ]


async def test_a_rate_limited_new_order_is_sent_again_after_retry_after_and_issued(
    proxy: AriProxy,
    make_client: MakeClient,
    solver: BrokerApiSolver,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
):
    proxy.rate_limited_new_orders = 1
    client = await make_client(url=proxy.url)

    issued = await issue(client, ["example.test"], solver)

    assert issued.names == ("example.test",)
    assert sleeps == [1.0]
    assert proxy.new_orders == [{"identifiers": EXAMPLE}, {"identifiers": EXAMPLE}]
    first, second = proxy.new_order_nonces
    assert first != second, "the repeated newOrder is signed again with a fresh nonce"
    assert "retrying in 1 s (retry 1 of 3)" in rate_limit_warnings(caplog)[0]


async def test_a_retry_after_past_the_bound_is_raised_at_once_without_waiting(
    proxy: AriProxy, make_client: MakeClient, sleeps: list[float]
):
    proxy.rate_limited_new_orders = 1
    proxy.rate_limit_retry_after = "3600"
    client = await make_client(url=proxy.url)

    with pytest.raises(RateLimitedError) as limited:
        await client.new_order(["example.test"])

    assert (limited.value.status, limited.value.retry_after) == (429, 3600.0)
    assert "too many new orders" in limited.value.detail
    assert sleeps == []
    assert len(proxy.new_orders) == 1
    order = await client.new_order(["example.test"])
    assert order.status is Status.PENDING, "the client stays usable once the limit is gone"


async def test_the_bound_is_the_clients_rate_limit_wait(
    proxy: AriProxy, pebble: Pebble, sleeps: list[float]
):
    proxy.rate_limited_new_orders = 1
    async with AcmeClient(
        proxy.url, generate_account_key(), ssl=pebble.ssl_context(), rate_limit_wait=0.5
    ) as client:
        await client.new_account()
        with pytest.raises(RateLimitedError) as limited:
            await client.new_order(["example.test"])
    assert limited.value.retry_after == 1.0
    assert sleeps == []
    assert len(proxy.new_orders) == 1


async def test_rate_limited_is_retried_after_its_retry_after_with_a_fresh_nonce(
    ca: FakeCa, sleeps: list[float], caplog: pytest.LogCaptureFixture
):
    ca.on("/account", rate_limited("1"), rate_limited("1"), ACCOUNT)
    async with AcmeClient(ca.url, generate_account_key(), rate_limit_wait=5) as client:
        account = await client.new_account()

    assert account.url == f"{ca.base}/account/1"
    assert sleeps == [1.0, 1.0]
    sent = ca.sent_to("/account")
    assert len(sent) == 3
    assert len({request.protected["nonce"] for request in sent}) == 3
    assert all(request.payload == sent[0].payload for request in sent)
    warnings = rate_limit_warnings(caplog)
    assert len(warnings) == 2
    assert "retrying in 1 s (retry 1 of 3)" in warnings[0]
    assert "too many new accounts" in warnings[1]


async def test_a_retry_after_as_an_http_date_is_waited_for_too(ca: FakeCa, sleeps: list[float]):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    ca.on("/account", rate_limited(when), ACCOUNT)
    async with AcmeClient(ca.url, generate_account_key()) as client:
        await client.new_account()
    assert len(sleeps) == 1
    assert 0 < sleeps[0] <= 30
    assert len(ca.sent_to("/account")) == 2


async def test_a_retry_after_beyond_the_default_bound_is_raised_at_once(
    ca: FakeCa, sleeps: list[float], caplog: pytest.LogCaptureFixture
):
    ca.on("/account", rate_limited("61"), ACCOUNT)
    async with AcmeClient(ca.url, generate_account_key()) as client:
        with pytest.raises(RateLimitedError) as failed:
            await client.new_account()

    assert failed.value.retry_after == 61.0
    assert sleeps == []
    assert len(ca.sent_to("/account")) == 1
    assert rate_limit_warnings(caplog) == []


async def test_rate_limited_without_retry_after_is_raised_at_once(ca: FakeCa, sleeps: list[float]):
    ca.on("/account", rate_limited(None), ACCOUNT)
    async with AcmeClient(ca.url, generate_account_key()) as client:
        with pytest.raises(RateLimitedError) as failed:
            await client.new_account()
    assert failed.value.retry_after is None
    assert sleeps == []
    assert len(ca.sent_to("/account")) == 1


async def test_waits_stop_where_the_next_would_pass_the_bound(ca: FakeCa, sleeps: list[float]):
    ca.on("/account", rate_limited("1"))
    async with AcmeClient(ca.url, generate_account_key(), rate_limit_wait=2.5) as client:
        with pytest.raises(RateLimitedError) as failed:
            await client.new_account()
    assert failed.value.retry_after == 1.0
    assert sleeps == [1.0, 1.0]
    assert len(ca.sent_to("/account")) == 3


async def test_at_most_three_retries_then_the_rate_limit_is_raised(ca: FakeCa, sleeps: list[float]):
    ca.on("/account", ACCOUNT)
    ca.on("/order", rate_limited("1"))
    async with AcmeClient(ca.url, generate_account_key()) as client:
        with pytest.raises(RateLimitedError):
            await client.new_order(["example.test"])
    assert sleeps == [1.0, 1.0, 1.0]
    assert len(ca.sent_to("/order")) == 4
