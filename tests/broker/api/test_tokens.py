"""Token management over HTTP: admin only; the token is shown once and then works."""

from __future__ import annotations

import pytest

from broker.auth import issue_token
from tests.support import Api, Running

BODY = {"domain": "www.example.test", "value": "v" * 43}


async def test_admin_creates_a_token_that_works_within_its_scope(api: Api, running: Running):
    status, created = await api.call(
        "POST",
        "/v1/tokens",
        running.admin_token,
        json={"name": "ci", "allow": ["*.example.test"], "expires": "90d"},
    )
    assert status == 201
    assert created["allow"] == ["*.example.test"]
    assert created["expires_at"] is not None
    status, _ = await api.call("POST", "/v1/present", created["token"], json=BODY)
    assert status == 201
    status, _ = await api.call(
        "POST", "/v1/present", created["token"], json={**BODY, "domain": "example.test"}
    )
    assert status == 403


async def test_token_list_never_shows_secrets_and_hides_revoked_by_default(
    api: Api, running: Running
):
    secret = await running.token("web1", ["example.test"])
    await running.token("web2", ["example.test"])
    await api.call("DELETE", "/v1/tokens/web2", running.admin_token, template="/v1/tokens/{name}")
    status, body = await api.call("GET", "/v1/tokens", running.admin_token)
    assert status == 200
    assert [t["name"] for t in body["tokens"]] == ["admin", "web1"]
    assert secret not in str(body)
    _, body = await api.call("GET", "/v1/tokens?all=true", running.admin_token)
    assert [t["name"] for t in body["tokens"]] == ["admin", "web1", "web2"]


async def test_non_admin_tokens_cannot_manage_tokens(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    status, body = await api.call("GET", "/v1/tokens", token)
    assert (status, body["code"]) == (403, "admin-required")
    status, _ = await api.call("POST", "/v1/tokens", token, json={"name": "x", "admin": True})
    assert status == 403
    status, _ = await api.call("DELETE", "/v1/tokens/admin", token, template="/v1/tokens/{name}")
    assert status == 403


async def test_duplicate_live_name_conflicts_but_a_revoked_name_can_be_reused(
    api: Api, running: Running
):
    admin = running.admin_token
    body = {"name": "web1", "allow": ["example.test"]}
    assert (await api.call("POST", "/v1/tokens", admin, json=body))[0] == 201
    status, problem = await api.call("POST", "/v1/tokens", admin, json=body)
    assert (status, problem["code"]) == (409, "conflict")
    await api.call("DELETE", "/v1/tokens/web1", admin, template="/v1/tokens/{name}")
    assert (await api.call("POST", "/v1/tokens", admin, json=body))[0] == 201


async def test_revoking_an_unknown_token_is_404(api: Api, running: Running):
    status, body = await api.call(
        "DELETE", "/v1/tokens/ghost", running.admin_token, template="/v1/tokens/{name}"
    )
    assert (status, body["code"]) == (404, "not-found")


async def test_invalid_token_requests_are_400(api: Api, running: Running):
    admin = running.admin_token
    for body in (
        {"name": "Bad Name", "allow": ["example.test"]},
        {"name": "ok", "allow": []},
        {"name": "ok", "allow": ["a..b"]},
        {"name": "ok", "allow": ["example.test"], "cidrs": ["nope"]},
        {"name": "ok", "allow": ["example.test"], "expires": "soon"},
        {"name": "ok", "allow": "example.test"},
    ):
        status, problem = await api.call("POST", "/v1/tokens", admin, json=body)
        assert status == 400, body
        assert problem["code"] in ("invalid-request", "invalid-name")
    _, listing = await api.call("GET", "/v1/tokens", admin)
    assert [t["name"] for t in listing["tokens"]] == ["admin"]


TEN_YEARS = 3650 * 86400


async def test_a_lifetime_beyond_ten_years_is_refused_and_listing_keeps_working(
    api: Api, running: Running
):
    admin = running.admin_token
    for expires in (10**30, 1e308, TEN_YEARS + 1, "3651d", "99999999999w", "9" * 400):
        status, problem = await api.call(
            "POST",
            "/v1/tokens",
            admin,
            json={"name": "far", "allow": ["example.test"], "expires": expires},
        )
        assert (status, problem["code"]) == (400, "invalid-request"), expires
        assert [e["pointer"] for e in problem["errors"]] == ["/expires"]
        assert "at most 3650d" in problem["detail"]
    status, created = await api.call(
        "POST",
        "/v1/tokens",
        admin,
        json={"name": "far", "allow": ["example.test"], "expires": TEN_YEARS},
    )
    assert status == 201
    assert created["expires_at"] > "2036"
    for query in ("", "?all=true"):
        status, listing = await api.call("GET", "/v1/tokens" + query, admin)
        assert status == 200
        assert {t["name"] for t in listing["tokens"]} == {"admin", "far"}


async def test_lifetimes_in_whole_seconds_or_text_and_fractions_refused(api: Api, running: Running):
    admin = running.admin_token
    for name, expires in (("float", 3600.0), ("text", "1h30m")):
        body = {"name": name, "allow": ["example.test"], "expires": expires}
        assert (await api.call("POST", "/v1/tokens", admin, json=body))[0] == 201
    for expires in (0.5, True, [], 0, -5, ""):
        body = {"name": "bad", "allow": ["example.test"], "expires": expires}
        status, problem = await api.call("POST", "/v1/tokens", admin, json=body)
        assert (status, problem["errors"][0]["pointer"]) == (400, "/expires"), expires


async def test_a_stored_time_no_calendar_can_show_does_not_break_the_admin_api(
    api: Api, running: Running
):
    """A row an older version stored (expiry 10**20 s away) lists and revokes."""
    issued = issue_token("old", ["example.test"], lifetime=1e20)
    await running.broker.store.create_token(issued.record)
    status, listing = await api.call("GET", "/v1/tokens", running.admin_token)
    assert status == 200
    old = next(t for t in listing["tokens"] if t["name"] == "old")
    assert old["expires_at"] == "9999-12-31T23:59:59.000Z"
    status, revoked = await api.call(
        "DELETE", "/v1/tokens/old", running.admin_token, template="/v1/tokens/{name}"
    )
    assert (status, revoked["name"]) == (200, "old")
    assert (await api.call("GET", "/v1/tokens?all=true", running.admin_token))[0] == 200


@pytest.mark.parametrize("value", ["AAA", "yes", "1", "TRUE", ""])
async def test_all_is_strictly_true_or_false(api: Api, running: Running, value):
    status, problem = await api.call("GET", f"/v1/tokens?all={value}", running.admin_token)
    assert (status, problem["code"]) == (400, "invalid-request")
    assert problem["errors"][0]["pointer"] == "/all"


async def test_all_true_includes_revoked_tokens(api: Api, running: Running):
    await running.token("gone", ["example.test"])
    await api.call("DELETE", "/v1/tokens/gone", running.admin_token, template="/v1/tokens/{name}")
    names = {
        query: {
            t["name"]
            for t in (await api.call("GET", "/v1/tokens" + query, running.admin_token))[1]["tokens"]
        }
        for query in ("", "?all=false", "?all=true")
    }
    assert names == {"": {"admin"}, "?all=false": {"admin"}, "?all=true": {"admin", "gone"}}


async def test_a_token_can_read_its_own_name_and_scopes(api: Api, running: Running):
    token = await running.token("web1", ["example.test", "*.example.test"])
    status, me = await api.call("GET", "/v1/whoami", token)
    assert (status, me) == (
        200,
        {
            "name": "web1",
            "allow": ["example.test", "*.example.test"],
            "admin": False,
            "persist": False,
        },
    )
    status, me = await api.call("GET", "/v1/whoami", running.admin_token)
    assert (status, me["admin"], me["allow"]) == (200, True, [])
    assert (await api.call("GET", "/v1/whoami", "d01_nope"))[0] == 401
