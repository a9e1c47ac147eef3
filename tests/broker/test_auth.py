"""Tokens: shape, storage as hashes, expiry, revocation, source CIDRs, forwarded-for."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress

import pytest

from broker.auth import client_address, issue_token
from broker.errors import InvalidNameError, InvalidRequestError
from tests.support import Api, Running, write_settings

BODY = {"domain": "www.example.test", "value": "v" * 43}


def test_issued_token_carries_256_random_bits_and_only_its_hash_is_kept():
    issued = issue_token("web1", ["example.test"])
    prefix, key, secret = issued.secret.split("_", 2)
    assert prefix == "d01"
    assert key == issued.record.key
    assert len(secret) == 43  # 32 bytes, base64url
    assert issued.record.digest == hashlib.sha256(issued.secret.encode()).hexdigest()
    assert issued.secret not in repr(issued.record)
    assert issue_token("web1", ["example.test"]).secret != issued.secret


@pytest.mark.parametrize(
    ("name", "allow", "cidrs", "error"),
    [
        ("Web1", ["example.test"], [], InvalidRequestError),
        ("", ["example.test"], [], InvalidRequestError),
        ("web1", [], [], InvalidRequestError),
        ("web1", ["a..b"], [], InvalidNameError),
        ("web1", ["example.test"], ["10.0.0.0/33"], InvalidRequestError),
        ("web1", ["example.test"], ["not-a-net"], InvalidRequestError),
    ],
)
def test_token_requests_are_validated(name, allow, cidrs, error):
    with pytest.raises(error):
        issue_token(name, allow, cidrs=cidrs)


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("192.0.2.7", None, [], "192.0.2.7"),
        ("::ffff:192.0.2.7", None, [], "192.0.2.7"),
        ("192.0.2.7", "10.9.9.9", [], "192.0.2.7"),
        ("10.0.0.1", "198.51.100.4", ["10.0.0.0/8"], "198.51.100.4"),
        ("10.0.0.1", "198.51.100.4, 10.0.0.2", ["10.0.0.0/8"], "198.51.100.4"),
        ("10.0.0.1", "203.0.113.9, 198.51.100.4", ["10.0.0.0/8"], "198.51.100.4"),
        ("10.0.0.1", "::ffff:198.51.100.4", ["10.0.0.0/8"], "198.51.100.4"),
        ("10.0.0.1", "garbage", ["10.0.0.0/8"], "10.0.0.1"),
    ],
)
def test_client_address_honours_forwarded_for_only_from_trusted_proxies(
    peer, xff, trusted, expected
):
    networks = [ipaddress.ip_network(n) for n in trusted]
    assert client_address(peer, xff, networks) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer d01_0000000000000000_" + "A" * 43,
        "Bearer not-a-token",
    ],
)
async def test_missing_or_unknown_token_is_401(api: Api, header):
    headers = {} if header is None else {"Authorization": header}
    status, body = await api.call("POST", "/v1/present", json=BODY, headers=headers)
    assert status == 401
    assert body["code"] == "unauthorized"


async def test_token_with_a_tampered_secret_is_401(api: Api, running: Running):
    token = await running.token("web1", ["*.example.test"])
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    status, _ = await api.call("POST", "/v1/present", tampered, json=BODY)
    assert status == 401
    status, _ = await api.call("POST", "/v1/present", token, json=BODY)
    assert status == 201


async def test_expired_token_is_401(api: Api, running: Running):
    token = await running.token("old", ["*.example.test"], lifetime=0.001)
    await asyncio.sleep(0.01)
    status, body = await api.call("POST", "/v1/present", token, json=BODY)
    assert (status, body["code"]) == (401, "unauthorized")
    assert "expired" in body["detail"]


async def test_revocation_takes_effect_at_once(api: Api, running: Running):
    token = await running.token("web1", ["*.example.test"])
    status, _ = await api.call("POST", "/v1/present", token, json=BODY)
    assert status == 201
    status, _ = await api.call(
        "DELETE", "/v1/tokens/web1", running.admin_token, template="/v1/tokens/{name}"
    )
    assert status == 200
    status, body = await api.call("POST", "/v1/cleanup", token, json=BODY)
    assert (status, body["code"]) == (401, "unauthorized")
    assert "revoked" in body["detail"]


async def test_out_of_scope_names_are_403_and_change_nothing(api: Api, running: Running):
    token = await running.token("web1", ["*.example.test"])
    for domain in ("example.test", "*.example.test", "a.notexample.test", "www.example.test.evil"):
        status, body = await api.call(
            "POST", "/v1/present", token, json={"domain": domain, "value": "v" * 43}
        )
        assert (status, body["code"]) == (403, "forbidden-name"), domain
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])


async def test_wildcard_scope_refusal_explains_which_scope_is_needed(api: Api, running: Running):
    token = await running.token("web1", ["*.example.test"])
    _, body = await api.call(
        "POST", "/v1/present", token, json={"domain": "*.example.test", "value": "v" * 43}
    )
    assert "needs the scope 'example.test'" in body["detail"]


async def test_source_cidr_is_enforced(api: Api, running: Running):
    outside = await running.token("far", ["*.example.test"], cidrs=["10.0.0.0/8"])
    inside = await running.token("near", ["*.example.test"], cidrs=["127.0.0.0/8"])
    status, body = await api.call("POST", "/v1/present", outside, json=BODY)
    assert (status, body["code"]) == (403, "forbidden-source")
    status, _ = await api.call("POST", "/v1/present", inside, json=BODY)
    assert status == 201


async def test_forwarded_for_counts_only_from_a_trusted_proxy(start_broker, tmp_path, openapi):
    trusting = await start_broker(
        write_settings(tmp_path, DNS01_BROKER_HTTP__TRUSTED_PROXIES="127.0.0.0/8")
    )
    api = Api(trusting, openapi)
    token = await trusting.token("lan", ["*.example.test"], cidrs=["192.0.2.0/24"])
    status, _ = await api.call("POST", "/v1/present", token, json=BODY)
    assert status == 403
    status, _ = await api.call(
        "POST", "/v1/present", token, json=BODY, headers={"X-Forwarded-For": "192.0.2.10"}
    )
    assert status == 201


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(api: Api, running: Running):
    token = await running.token("lan", ["*.example.test"], cidrs=["192.0.2.0/24"])
    status, body = await api.call(
        "POST", "/v1/present", token, json=BODY, headers={"X-Forwarded-For": "192.0.2.10"}
    )
    assert (status, body["code"]) == (403, "forbidden-source")
