"""OIDC workload identity over HTTP (SQLite and PostgreSQL): a CI job's ID token used
directly as bearer or exchanged for a short-lived broker token, never admin, each ID token
exchanged once, every decision audited; and one-shot tokens."""

from __future__ import annotations

import base64
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import StartBroker
from tests.fakes.oidc import LocalIssuer
from tests.support import Api, OpenApi, Running, write_settings

RULES = """
[[oidc.issuers.rules]]
claims = { repository = "org/web", ref = "refs/heads/main" }
allow = ["*.web.example.test", "web.example.test"]
[[oidc.issuers.rules]]
claims = { project_path = "group/*", ref_protected = "true" }
allow = "api.example.test"
"""
VALUE = "v" * 43


@pytest.fixture
async def oidc_api(
    start_broker: StartBroker, local_issuer: LocalIssuer, openapi: OpenApi, tmp_path: Any
) -> Api:
    settings = write_settings(tmp_path, local_issuer.config("ci", RULES))
    return Api(await start_broker(settings), openapi)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def audit_events(api: Api, action: str) -> list[dict[str, Any]]:
    running: Running = api.running
    assert running.broker.audit is not None
    await running.broker.audit.drain()
    status, body = await api.call("GET", f"/v1/audit?action={action}", running.admin_token)
    assert status == 200
    events: list[dict[str, Any]] = body["events"]
    return events


async def test_a_jobs_id_token_presents_and_cleans_up_directly(
    oidc_api: Api, local_issuer: LocalIssuer
):
    jwt = local_issuer.sign(local_issuer.github())
    body = {"domain": "www.web.example.test", "value": VALUE}
    status, created = await oidc_api.call("POST", "/v1/present", jwt, json=body)
    assert status == 201
    assert created["owner"] == "oidc:ci:repo:org/web:ref:refs/heads/main"
    # the same ID token again, for the cleanup (a job's normal use)
    status, cleaned = await oidc_api.call("POST", "/v1/cleanup", jwt, json=body)
    assert (status, cleaned["removed"]) == (200, True)
    status, problem = await oidc_api.call(
        "POST", "/v1/present", jwt, json={**body, "domain": "www.example.test"}
    )
    assert (status, problem["code"]) == (403, "forbidden-name")
    status, me = await oidc_api.call("GET", "/v1/whoami", jwt)
    assert (status, me["admin"], me["allow"]) == (
        200, False, ["*.web.example.test", "web.example.test"]
    )  # fmt: skip
    status, problem = await oidc_api.call("GET", "/v1/tokens", jwt)
    assert (status, problem["code"]) == (403, "admin-required")
    events = await audit_events(oidc_api, "oidc.verify")
    assert {e["result"] for e in events} == {"ok"}
    assert all(e["actor"] == "oidc:ci:repo:org/web:ref:refs/heads/main" for e in events)
    assert "repository=org/web" in events[0]["target"]
    assert jwt.split(".")[2] not in str(events)


async def test_exchange_gives_a_short_lived_token_of_the_matched_scopes_once(
    oidc_api: Api, local_issuer: LocalIssuer
):
    jwt = local_issuer.sign(local_issuer.github())
    status, issued = await oidc_api.call("POST", "/v1/tokens/exchange", jwt)
    assert status == 201
    assert issued["allow"] == ["*.web.example.test", "web.example.test"]
    assert issued["admin"] is False
    assert issued["name"].startswith("oidc-ci-")
    lifetime = at(issued["expires_at"]) - at(issued["created_at"])
    assert 0 < lifetime <= 300  # capped by the ID token's own exp (5 minutes)
    token = issued["token"]
    body = {"domain": "web.example.test", "value": VALUE}
    assert (await oidc_api.call("POST", "/v1/present", token, json=body))[0] == 201
    assert (await oidc_api.call("POST", "/v1/cleanup", token, json=body))[0] == 200
    assert (await oidc_api.call("GET", "/v1/tokens", token))[0] == 403
    # the same ID token again: a replay
    status, problem = await oidc_api.call("POST", "/v1/tokens/exchange", jwt)
    assert (status, problem["code"]) == (401, "unauthorized")
    assert "exchanged already" in problem["detail"]
    exchanges = await audit_events(oidc_api, "token.exchange")
    assert [e["result"] for e in exchanges] == ["unauthorized", "ok"]
    assert exchanges[1]["target"] == issued["name"]
    verified = await audit_events(oidc_api, "oidc.verify")
    assert [e["result"] for e in verified][:2] == ["replayed", "ok"]


async def test_exchange_lifetime_defaults_to_15_minutes_and_may_be_shorter(
    oidc_api: Api, local_issuer: LocalIssuer
):
    claims = local_issuer.github(exp=int(time.time()) + 3600)
    status, issued = await oidc_api.call("POST", "/v1/tokens/exchange", local_issuer.sign(claims))
    assert status == 201
    assert at(issued["expires_at"]) - at(issued["created_at"]) == pytest.approx(900, abs=1)
    shorter = local_issuer.sign(local_issuer.github(exp=int(time.time()) + 3600))
    status, issued = await oidc_api.call(
        "POST", "/v1/tokens/exchange", shorter, json={"expires": "5m"}
    )
    assert status == 201
    assert at(issued["expires_at"]) - at(issued["created_at"]) == pytest.approx(300, abs=1)


async def test_gitlab_tokens_signed_with_ec_match_their_rule(
    oidc_api: Api, local_issuer: LocalIssuer
):
    jwt = local_issuer.sign(local_issuer.gitlab("group/api"), "ec-1")
    status, issued = await oidc_api.call("POST", "/v1/tokens/exchange", jwt)
    assert (status, issued["allow"]) == (201, ["api.example.test"])


async def test_refused_id_tokens(oidc_api: Api, local_issuer: LocalIssuer):
    sign = local_issuer.sign
    no_rule = sign(local_issuer.github(repository="org/other"))
    for path in ("/v1/tokens/exchange", "/v1/whoami"):
        method = "POST" if path.endswith("exchange") else "GET"
        status, problem = await oidc_api.call(method, path, no_rule)
        assert (status, problem["code"]) == (403, "no-matching-rule")
    expired = sign(local_issuer.github(exp=int(time.time()) - 600))
    status, problem = await oidc_api.call("POST", "/v1/tokens/exchange", expired)
    assert (status, problem["code"]) == (401, "unauthorized")
    assert "expired" in problem["detail"]
    wrong_audience = sign(local_issuer.github(aud="https://elsewhere.example"))
    status, problem = await oidc_api.call("GET", "/v1/whoami", wrong_audience)
    assert status == 401
    assert "audience" in problem["detail"]
    admin = oidc_api.running.admin_token
    status, problem = await oidc_api.call("POST", "/v1/tokens/exchange", admin)
    assert status == 401
    assert "OIDC ID token" in problem["detail"]
    reasons = [e["result"] for e in await audit_events(oidc_api, "oidc.verify")]
    assert reasons == ["wrong-audience", "expired", "no-matching-rule", "no-matching-rule"]


async def test_a_broker_without_issuers_refuses_id_tokens(api: Api, local_issuer: LocalIssuer):
    jwt = local_issuer.sign(local_issuer.github())
    status, problem = await api.call("GET", "/v1/whoami", jwt)
    assert status == 401
    assert "[[oidc.issuers]]" in problem["detail"]
    status, problem = await api.call("POST", "/v1/tokens/exchange", jwt)
    assert status == 401


async def test_a_one_shot_token_does_one_present_and_its_cleanup(api: Api, running: Running):
    status, created = await api.call(
        "POST",
        "/v1/tokens",
        running.admin_token,
        json={"name": "once", "allow": ["*.example.test"], "one_shot": True, "expires": "15m"},
    )
    assert (status, created["one_shot"]) == (201, True)
    token = created["token"]
    first = {"domain": "a.example.test", "value": VALUE}
    other = {"domain": "b.example.test", "value": VALUE}
    assert (await api.call("POST", "/v1/present", token, json=first))[0] == 201
    assert (await api.call("POST", "/v1/present", token, json=first))[0] == 200  # idempotent
    status, problem = await api.call("POST", "/v1/present", token, json=other)
    assert (status, problem["code"]) == (403, "one-shot-used")
    status, problem = await api.call("POST", "/v1/cleanup", token, json=other)
    assert (status, problem["code"]) == (403, "one-shot-used")
    status, cleaned = await api.call("POST", "/v1/cleanup", token, json=first)
    assert (status, cleaned["removed"]) == (200, True)
    status, problem = await api.call("POST", "/v1/present", token, json=first)
    assert status == 401
    assert "revoked" in problem["detail"]


async def test_a_one_shot_token_cannot_be_admin_or_have_tsig(api: Api, running: Running):
    for extra in ({"admin": True}, {"tsig": True}):
        status, problem = await api.call(
            "POST",
            "/v1/tokens",
            running.admin_token,
            json={"name": "once", "allow": ["example.test"], "one_shot": True, **extra},
        )
        assert (status, problem["code"]) == (400, "invalid-request")


async def test_an_id_token_cannot_order_a_kept_renewed_certificate(
    oidc_api: Api, local_issuer: LocalIssuer
):
    jwt = local_issuer.sign(local_issuer.github())
    status, problem = await oidc_api.call(
        "POST", "/v1/certificates", jwt, json={"csr": "-----BEGIN", "renew": True}
    )
    assert (status, problem["code"]) == (400, "invalid-request")
    assert "renew" in problem["detail"]


async def test_the_exchange_path_takes_only_post_and_its_name_is_reserved(
    api: Api, running: Running
):
    for method in ("DELETE", "GET", "OPTIONS"):
        status, problem, response = await running.call(
            method, "/v1/tokens/exchange", running.admin_token
        )
        assert (status, problem["code"]) == (405, "method-not-allowed"), method
        assert response.headers["Allow"] == "POST"
    status, problem = await api.call(
        "POST", "/v1/tokens", running.admin_token, json={"name": "exchange", "allow": ["a.test"]}
    )
    assert (status, problem["code"]) == (400, "invalid-request")
    assert "reserved" in problem["detail"]


async def test_an_id_token_is_also_an_httpreq_password(oidc_api: Api, local_issuer: LocalIssuer):
    jwt = local_issuer.sign(local_issuer.github())
    basic = {"Authorization": "Basic " + base64.b64encode(f"job:{jwt}".encode()).decode()}
    body = {"fqdn": "_acme-challenge.web.example.test.", "value": VALUE}
    running = oidc_api.running
    status, echoed, _ = await running.call("POST", "/present", json=body, headers=basic)
    assert (status, echoed) == (200, body)
    assert (await running.txt("_acme-challenge.web.example.test."))[1] == [VALUE]
