"""The lego httpreq face (also acme.sh dns_acmeproxy and Caddy), and CNAME delegation."""

from __future__ import annotations

import base64
import hashlib
import json

import dns.rdatatype
import dns.rrset
import pytest

from tests.support import Api, Running, write_settings

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
OTHER = "x" * 43


def basic(token: str, user: str = "lego") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


async def post(running: Running, path: str, body, headers) -> tuple[int, str]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with running.session.post(running.url + path, data=data, headers=headers) as response:
        return response.status, await response.text()


def delegate(running: Running, name: str, target: str) -> None:
    zone = running.broker.zone_set.find(dns.name.from_text(name))
    assert zone is not None
    zone.add_static(dns.rrset.from_text(name, 300, "IN", "CNAME", target))


async def test_lego_default_mode_presents_and_cleans_up(running: Running):
    token = await running.token("web1", ["example.test", "*.example.test"])
    headers = {**basic(token), "Accept": "application/json", "Content-Type": "application/json"}
    body = {"fqdn": "_acme-challenge.example.test.", "value": VALUE}
    status, text = await post(running, "/present", body, headers)
    assert (status, json.loads(text)) == (200, body)
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [VALUE])
    status, text = await post(running, "/cleanup", body, headers)
    assert (status, json.loads(text)) == (200, body)
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])
    _, metrics, _ = await running.call("GET", "/metrics")
    for operation in ("present", "cleanup"):
        line = f'dns01_broker_challenge_operation_seconds_count{{operation="{operation}"}} 1.0'
        assert line in metrics.splitlines()


async def test_lego_raw_mode_computes_the_value_from_the_key_authorization(running: Running):
    token = await running.token("web1", ["example.test"])
    key_auth = "token-abc.thumbprint-xyz"
    expected = base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()).decode()
    body = {"domain": "*.example.test", "token": "token-abc", "keyAuth": key_auth}
    status, text = await post(running, "/present", body, basic(token))
    assert (status, json.loads(text)) == (200, body)
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [expected.rstrip("=")])
    assert (await post(running, "/cleanup", body, basic(token)))[0] == 200
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])


async def test_acme_sh_acmeproxy_shape_gets_its_value_echoed(running: Running):
    token = await running.token("web1", ["www.example.test"])
    body = f'{{"fqdn": "_acme-challenge.www.example.test.", "value": "{VALUE}"}}'
    status, text = await post(running, "/present", body, basic(token, "acme"))
    assert status == 200
    assert f'"{VALUE}"' in text
    assert "\n" not in text


async def test_caddy_capitalised_keys_are_echoed_exactly(running: Running):
    token = await running.token("web1", ["www.example.test"])
    body = {"FQDN": "_acme-challenge.WWW.example.test.", "Value": VALUE}
    status, text = await post(running, "/present", body, basic(token))
    assert (status, json.loads(text)) == (
        200,
        {"fqdn": "_acme-challenge.WWW.example.test.", "value": VALUE},
    )
    assert await running.txt("_acme-challenge.www.example.test") == ("NOERROR", [VALUE])


async def test_no_content_type_and_bearer_auth_work_too(running: Running):
    token = await running.token("web1", ["www.example.test"])
    body = json.dumps({"fqdn": "_acme-challenge.www.example.test", "value": VALUE}).encode()
    status, _ = await post(running, "/present", body, {"Authorization": f"Bearer {token}"})
    assert status == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic !!!"}, {"Authorization": "Digest x"}, basic("wrong")],
)
async def test_missing_or_bad_credentials_are_401(running: Running, headers):
    body = {"fqdn": "_acme-challenge.example.test.", "value": VALUE}
    status, text = await post(running, "/present", body, headers)
    assert status == 401
    assert json.loads(text)["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"nope", 400),
        ({"fqdn": "_acme-challenge.example.test."}, 400),
        ({"fqdn": 5, "value": VALUE}, 400),
        ({"fqdn": "_acme-challenge.example.test.", "value": "bad value"}, 400),
        ({"fqdn": "_acme-challenge..example.test.", "value": VALUE}, 400),
        ({"domain": "example.test", "token": "t"}, 400),
        ({"fqdn": "_acme-challenge.other.test.", "value": VALUE}, 403),
    ],
)
async def test_bad_bodies_change_nothing(running: Running, body, status):
    token = await running.token("web1", ["example.test"])
    got, _ = await post(running, "/present", body, basic(token))
    assert got == status
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])


async def test_base_path_is_configurable(start_broker, tmp_path):
    running = await start_broker(write_settings(tmp_path, '[httpreq]\nbase_path = "/httpreq/"\n'))
    token = await running.token("web1", ["example.test"])
    body = {"fqdn": "_acme-challenge.example.test.", "value": VALUE}
    assert (await post(running, "/httpreq/present", body, basic(token)))[0] == 200
    assert (await post(running, "/present", body, basic(token)))[0] == 404


async def test_delegated_target_is_accepted_when_a_scoped_name_points_there(running: Running):
    target = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."
    delegate(running, "_acme-challenge.app.example.test.", target)
    exact = await running.token("exact", ["app.example.test"])
    body = {"fqdn": target, "value": VALUE}
    status, text = await post(running, "/present", body, basic(exact))
    assert (status, json.loads(text)) == (200, body)
    assert await running.txt(target) == ("NOERROR", [VALUE])
    _, values = await running.txt("_acme-challenge.app.example.test")
    assert values == [VALUE]  # the CNAME and its target's TXT in one answer
    assert (await post(running, "/cleanup", body, basic(exact)))[0] == 200
    assert await running.txt(target) == ("NXDOMAIN", [])


async def test_delegated_target_is_refused_by_suffix_or_wildcard_scope(running: Running):
    target = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."
    delegate(running, "_acme-challenge.app.example.test.", target)
    wildcard = await running.token("wild", ["*.example.test"])
    other = await running.token("other", ["api.example.test"])
    for token in (wildcard, other):
        status, text = await post(
            running, "/present", {"fqdn": target, "value": VALUE}, basic(token)
        )
        assert status == 403
        assert "delegates to it by CNAME" in json.loads(text)["detail"]
    # nor because a scope names the target: a scope proves its name at _acme-challenge only
    named = await running.token("named", [target])
    status, _ = await post(running, "/present", {"fqdn": target, "value": VALUE}, basic(named))
    assert status == 403
    assert await running.txt(target) == ("NXDOMAIN", [])


async def test_native_present_follows_a_cname_and_says_where_it_wrote(api: Api, running: Running):
    target = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."
    delegate(running, "_acme-challenge.app.example.test.", target)
    token = await running.token("web1", ["app.example.test"])
    status, record = await api.call(
        "POST", "/v1/present", token, json={"domain": "app.example.test", "value": VALUE}
    )
    assert status == 201
    assert record["fqdn"] == target
    assert record["delegated_from"] == "_acme-challenge.app.example.test."
    status, seen = await api.call(
        "GET", f"/v1/challenges/{record['id']}", token, template="/v1/challenges/{id}"
    )
    assert (status, seen["fqdn"]) == (200, target)
    status, cleaned = await api.call(
        "POST", "/v1/cleanup", token, json={"domain": "app.example.test", "value": VALUE}
    )
    assert (status, cleaned["removed"]) == (200, True)
    assert await running.txt(target) == ("NXDOMAIN", [])


async def test_a_cname_loop_is_a_clear_error(api: Api, running: Running):
    delegate(running, "_acme-challenge.loop.example.test.", "a.loop.example.test.")
    delegate(running, "a.loop.example.test.", "_acme-challenge.loop.example.test.")
    token = await running.token("web1", ["loop.example.test"])
    status, problem = await api.call(
        "POST", "/v1/present", token, json={"domain": "loop.example.test", "value": VALUE}
    )
    assert (status, problem["code"]) == (422, "no-zone")
    assert "loops" in problem["detail"]
