"""Rate limits per source address and per token, the bound on requests in flight and
the body bounds, against a real broker on each store."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp

from broker.api.limits import TokenBuckets, retry_after
from tests.conftest import StartBroker
from tests.support import Api, OpenApi, Running, write_settings

GOOD = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


def limited(tmp_path: Any, **env: str) -> Any:
    """Settings whose buckets are off unless ``env`` turns one on."""
    base = {
        "DNS01_BROKER_HTTP__RATE_LIMIT__ADDRESS_RATE": "0",
        "DNS01_BROKER_HTTP__RATE_LIMIT__TOKEN_RATE": "0",
    }
    return write_settings(tmp_path, **{**base, **env})


def assert_retry_later(status: int, body: Any, response: aiohttp.ClientResponse, code: str) -> None:
    assert (status, body["code"], body["retryable"]) == (
        {"rate-limited": 429, "overloaded": 503}[code],
        code,
        True,
    )
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) >= 1


def test_a_bucket_allows_its_burst_then_refuses_until_it_refills() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, max_tracked=100, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5
    assert buckets.take("b") == 0.0
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0


def test_the_table_keeps_at_most_max_tracked_buckets_dropping_the_idlest() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=0.001, burst=1, max_tracked=100, clock=lambda: now[0])
    buckets.take("busy")
    for key in range(99):
        buckets.take(key)
    assert buckets.take("busy") > 0
    for key in range(99, 1000):
        buckets.take(key)
    assert len(buckets) == 100
    assert buckets.take(0) == 0.0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert [retry_after(s) for s in (0.001, 1.0, 1.2, 59.9)] == [1, 1, 2, 60]


async def test_an_address_past_its_burst_gets_429_with_retry_after(
    start_broker: StartBroker, tmp_path: Any, openapi: OpenApi
) -> None:
    running = await start_broker(
        limited(
            tmp_path,
            DNS01_BROKER_HTTP__RATE_LIMIT__ADDRESS_RATE="0.01",
            DNS01_BROKER_HTTP__RATE_LIMIT__ADDRESS_BURST="3",
        )
    )
    token = await running.token("ci", ["example.test"])
    for _ in range(3):
        assert (await running.call("GET", "/v1/whoami", token))[0] == 200
    status, body, response = await running.call("GET", "/v1/whoami", token)
    assert_retry_later(status, body, response, "rate-limited")
    openapi.check("GET", "/v1/whoami", status, body)
    # Unauthenticated requests, other faces and spoofed X-Forwarded-For count too.
    for path in ("/v1/tokens", "/present", "/update"):
        status, body, response = await running.call(
            "POST", path, json={}, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert_retry_later(status, body, response, "rate-limited")
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert (await running.call("GET", probe))[0] == 200


async def test_forwarded_addresses_get_buckets_of_their_own_only_behind_a_trusted_proxy(
    start_broker: StartBroker, tmp_path: Any
) -> None:
    running = await start_broker(
        limited(
            tmp_path,
            DNS01_BROKER_HTTP__TRUSTED_PROXIES="127.0.0.1/32",
            DNS01_BROKER_HTTP__RATE_LIMIT__ADDRESS_RATE="0.01",
            DNS01_BROKER_HTTP__RATE_LIMIT__ADDRESS_BURST="2",
        )
    )

    async def status_from(forwarded: str) -> int:
        return (await running.call("GET", "/v1/whoami", headers={"X-Forwarded-For": forwarded}))[0]

    assert [await status_from("198.51.100.1") for _ in range(3)] == [401, 401, 429]
    assert await status_from("198.51.100.2") == 401
    # One IPv6 /64 is one caller.
    assert [await status_from(f"2001:db8::{i}") for i in range(1, 4)] == [401, 401, 429]
    assert await status_from("2001:db8:0:1::1") == 401


async def test_a_token_past_its_burst_gets_429_on_every_face_others_do_not(
    start_broker: StartBroker, tmp_path: Any, openapi: OpenApi
) -> None:
    running = await start_broker(
        limited(
            tmp_path,
            DNS01_BROKER_HTTP__RATE_LIMIT__TOKEN_RATE="0.01",
            DNS01_BROKER_HTTP__RATE_LIMIT__TOKEN_BURST="2",
        )
    )
    api = Api(running, openapi)
    busy = await running.token("busy", ["*.example.test"])
    calm = await running.token("calm", ["*.example.test"])
    assert (await api.call("GET", "/v1/whoami", busy))[0] == 200
    assert (
        await api.call(
            "POST", "/v1/cleanup", busy, json={"domain": "a.example.test", "value": GOOD}
        )
    )[0] == 200
    status, body = await api.call("GET", "/v1/whoami", busy)
    assert (status, body["code"]) == (429, "rate-limited")
    basic = "Basic " + base64.b64encode(f"lego:{busy}".encode()).decode()
    status, body, response = await running.call(
        "POST",
        "/present",
        json={"fqdn": "_acme-challenge.a.example.test.", "value": GOOD},
        headers={"Authorization": basic},
    )
    assert_retry_later(status, body, response, "rate-limited")
    assert (await running.call("GET", "/v1/whoami", calm))[0] == 200


async def test_an_acme_dns_account_past_its_burst_gets_429(
    start_broker: StartBroker, tmp_path: Any, openapi: OpenApi
) -> None:
    running = await start_broker(
        limited(
            tmp_path,
            DNS01_BROKER_HTTP__RATE_LIMIT__TOKEN_RATE="0.01",
            DNS01_BROKER_HTTP__RATE_LIMIT__TOKEN_BURST="2",
        )
    )
    accounts = [(await running.call("POST", "/register"))[1] for _ in range(2)]

    async def update(account: dict[str, str], txt: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        return await running.call(
            "POST",
            "/update",
            data=json.dumps({"subdomain": account["subdomain"], "txt": txt}),
            headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]},
        )

    assert [(await update(accounts[0], GOOD))[0] for _ in range(2)] == [200, 200]
    status, body, response = await update(accounts[0], GOOD)
    assert_retry_later(status, body, response, "rate-limited")
    openapi.check("POST", "/update", status, body)
    assert (await update(accounts[1], GOOD))[0] == 200
    # A wrong password is never charged to the account it names.
    wrong = {**accounts[1], "password": "x" * 40}
    assert [(await update(wrong, GOOD))[0] for _ in range(3)] == [401, 401, 401]
    assert (await update(accounts[1], GOOD))[0] == 200


async def _hold_a_request(running: Running) -> asyncio.StreamWriter:
    """A request whose body never comes: it holds its slot until the body timeout."""
    host, port = running.broker._runner.addresses[0][:2]  # type: ignore[union-attr]
    _, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/present HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    return writer


async def test_past_max_in_flight_requests_get_503_overloaded_at_once(
    start_broker: StartBroker, tmp_path: Any, openapi: OpenApi
) -> None:
    running = await start_broker(limited(tmp_path, DNS01_BROKER_HTTP__MAX_IN_FLIGHT="2"))
    held = [await _hold_a_request(running) for _ in range(2)]
    for _ in range(200):
        status, body, response = await running.call("GET", "/v1/whoami")
        if status != 401:
            break
        await asyncio.sleep(0.05)
    assert_retry_later(status, body, response, "overloaded")
    openapi.check("GET", "/v1/whoami", status, body)
    assert (await running.call("GET", "/healthz"))[0] == 200
    for writer in held:
        writer.close()
    for _ in range(200):
        if (await running.call("GET", "/v1/whoami"))[0] == 401:
            break
        await asyncio.sleep(0.05)
    assert (await running.call("GET", "/v1/whoami"))[0] == 401


async def test_bodies_over_max_body_bytes_are_refused_on_every_face(
    start_broker: StartBroker, tmp_path: Any, openapi: OpenApi
) -> None:
    running = await start_broker(limited(tmp_path, DNS01_BROKER_HTTP__MAX_BODY_BYTES="1024"))
    token = await running.token("ci", ["*.example.test"])
    _, account, _ = await running.call("POST", "/register")
    big = json.dumps({"subdomain": account["subdomain"], "txt": GOOD, "pad": "x" * 2000})
    basic = "Basic " + base64.b64encode(f"lego:{token}".encode()).decode()
    calls = [
        ("/v1/present", {"Authorization": f"Bearer {token}"}),
        ("/present", {"Authorization": basic}),
        ("/register", {}),
        ("/update", {"X-Api-User": account["username"], "X-Api-Key": account["password"]}),
    ]
    for path, headers in calls:
        status, body, _ = await running.call("POST", path, data=big, headers=headers)
        assert (path, status, body["code"]) == (path, 413, "body-too-large")
        openapi.check("POST", path, status, body)
