"""The native v1 API against a real broker: HTTP in, authoritative DNS out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

from tests.support import Api, Running, require_binary, write_settings

DIGEST_A = base64.urlsafe_b64encode(hashlib.sha256(b"a").digest()).decode().rstrip("=")
DIGEST_B = base64.urlsafe_b64encode(hashlib.sha256(b"b").digest()).decode().rstrip("=")


async def test_present_is_served_by_dns_when_the_response_arrives(api: Api, running: Running):
    token = await running.token("web1", ["example.test", "*.example.test"])
    status, body = await api.call(
        "POST", "/v1/present", token, json={"domain": "www.example.test", "value": DIGEST_A}
    )
    assert status == 201
    assert body["fqdn"] == "_acme-challenge.www.example.test."
    assert body["owner"] == "web1"
    assert body["state"] == "present"
    assert await running.txt("_acme-challenge.www.example.test") == ("NOERROR", [DIGEST_A])


async def test_wildcard_and_apex_values_live_on_one_name_at_once(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    for domain, value in (("*.example.test", DIGEST_A), ("example.test", DIGEST_B)):
        status, body = await api.call(
            "POST", "/v1/present", token, json={"domain": domain, "value": value}
        )
        assert status == 201
        assert body["fqdn"] == "_acme-challenge.example.test."
    assert await running.txt("_acme-challenge.example.test") == (
        "NOERROR",
        sorted([DIGEST_A, DIGEST_B]),
    )
    assert await running.txt("_acme-challenge.example.test", tcp=True) == (
        "NOERROR",
        sorted([DIGEST_A, DIGEST_B]),
    )


async def test_fqdn_form_with_trailing_dot_and_upper_case_lands_on_the_same_name(
    api: Api, running: Running
):
    token = await running.token("web1", ["www.example.test"])
    status, body = await api.call(
        "POST",
        "/v1/present",
        token,
        json={"fqdn": "_ACME-Challenge.WWW.Example.Test.", "value": DIGEST_A},
    )
    assert status == 201
    assert body["fqdn"] == "_acme-challenge.www.example.test."
    assert await running.txt("_acme-challenge.www.example.test") == ("NOERROR", [DIGEST_A])


async def test_repeated_present_is_idempotent_and_extends_the_lease(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    body = {"domain": "example.test", "value": DIGEST_A, "lease": 60}
    status, first = await api.call("POST", "/v1/present", token, json=body)
    assert status == 201
    status, second = await api.call("POST", "/v1/present", token, json={**body, "lease": 600})
    assert status == 200
    assert second["id"] == first["id"]
    assert second["expires_at"] > first["expires_at"]
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_A])


async def test_cleanup_removes_exactly_one_value_and_keeps_the_other(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    for value in (DIGEST_A, DIGEST_B):
        await api.call(
            "POST", "/v1/present", token, json={"domain": "example.test", "value": value}
        )
    status, body = await api.call(
        "POST", "/v1/cleanup", token, json={"domain": "*.example.test", "value": DIGEST_A}
    )
    assert status == 200
    assert body["removed"] is True
    assert body["challenge"]["state"] == "removed"
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_B])

    status, record = await api.call(
        "GET",
        f"/v1/challenges/{body['challenge']['id']}",
        token,
        template="/v1/challenges/{id}",
    )
    assert status == 200
    assert record["state"] == "removed"
    assert record["ended_at"] is not None


async def test_cleanup_of_unknown_value_is_a_noop_success(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    await api.call("POST", "/v1/present", token, json={"domain": "example.test", "value": DIGEST_A})
    status, body = await api.call(
        "POST", "/v1/cleanup", token, json={"domain": "example.test", "value": DIGEST_B}
    )
    assert status == 200
    assert body == {
        "fqdn": "_acme-challenge.example.test.",
        "value": DIGEST_B,
        "removed": False,
        "challenge": None,
    }
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_A])


async def test_last_value_removed_makes_the_name_disappear(api: Api, running: Running):
    token = await running.token("web1", ["*.example.test"])
    body = {"domain": "a.b.example.test", "value": DIGEST_A}
    await api.call("POST", "/v1/present", token, json=body)
    assert (await running.txt("_acme-challenge.a.b.example.test"))[0] == "NOERROR"
    await api.call("POST", "/v1/cleanup", token, json=body)
    assert await running.txt("_acme-challenge.a.b.example.test") == ("NXDOMAIN", [])
    assert await running.txt("b.example.test") == ("NXDOMAIN", [])


async def test_concurrent_presents_on_one_name_all_land(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    values = [f"value-{i:02d}-" + "x" * 30 for i in range(16)]
    results = await asyncio.gather(
        *(
            api.call("POST", "/v1/present", token, json={"domain": "example.test", "value": v})
            for v in values
        )
    )
    assert [status for status, _ in results] == [201] * 16
    assert await running.txt("_acme-challenge.example.test", tcp=True) == (
        "NOERROR",
        sorted(values),
    )
    status, _, _ = await running.call("GET", "/metrics")
    assert status == 200


async def test_challenge_is_invisible_to_a_token_outside_its_scope(api: Api, running: Running):
    owner = await running.token("web1", ["www.example.test"])
    other = await running.token("web2", ["api.example.test"])
    _, body = await api.call(
        "POST", "/v1/present", owner, json={"domain": "www.example.test", "value": DIGEST_A}
    )
    path = f"/v1/challenges/{body['id']}"
    status, _ = await api.call("GET", path, other, template="/v1/challenges/{id}")
    assert status == 404
    status, _ = await api.call("GET", path, owner, template="/v1/challenges/{id}")
    assert status == 200
    status, _ = await api.call("GET", "/v1/challenges/nope", owner, template="/v1/challenges/{id}")
    assert status == 404


async def test_lease_expiry_removes_the_record_from_dns(start_broker, tmp_path, openapi):
    running = await start_broker(
        write_settings(tmp_path, "[challenges]\nreconcile_interval = 0.1\n")
    )
    api = Api(running, openapi)
    token = await running.token("web1", ["example.test"])
    _, keep = await api.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": DIGEST_B}
    )
    _, short = await api.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": DIGEST_A, "lease": 1}
    )
    for _ in range(50):
        if await running.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_B]):
            break
        await asyncio.sleep(0.1)
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_B])
    _, record = await api.call(
        "GET", f"/v1/challenges/{short['id']}", token, template="/v1/challenges/{id}"
    )
    assert record["state"] == "expired"
    _, record = await api.call(
        "GET", f"/v1/challenges/{keep['id']}", token, template="/v1/challenges/{id}"
    )
    assert record["state"] == "present"


async def test_records_survive_a_restart(start_broker, tmp_path):
    settings = write_settings(tmp_path)
    first = await start_broker(settings)
    token = await first.token("web1", ["example.test"])
    status, _, _ = await first.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": DIGEST_A}
    )
    assert status == 201
    await first.broker.stop()

    second = await start_broker(settings)
    assert await second.txt("_acme-challenge.example.test") == ("NOERROR", [DIGEST_A])
    status, body, _ = await second.call(
        "POST", "/v1/cleanup", token, json={"domain": "example.test", "value": DIGEST_A}
    )
    assert (status, body["removed"]) == (200, True)
    assert await second.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])


async def test_dig_sees_presented_values_as_an_authoritative_answer(api: Api, running: Running):
    dig = require_binary("dig")
    token = await running.token("web1", ["example.test"])
    for value in (DIGEST_A, DIGEST_B):
        await api.call(
            "POST", "/v1/present", token, json={"domain": "example.test", "value": value}
        )
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    for transport in ("+notcp", "+tcp"):
        process = await asyncio.create_subprocess_exec(
            dig, f"@{host}", "-p", str(port), "TXT", "_acme-challenge.Example.Test",
            transport, "+norecurse", "+time=2", "+tries=1",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        text = out.decode()
        assert "status: NOERROR" in text
        assert re.search(r"flags: qr aa;", text), text
        answers = re.findall(
            r'^_acme-challenge\.Example\.Test\.\s+60\s+IN\s+TXT\s+"(\S+)"$', text, re.M
        )
        assert sorted(answers) == sorted([DIGEST_A, DIGEST_B])


async def test_a_name_holds_at_most_the_configured_number_of_values(
    start_broker, tmp_path, openapi
):
    running = await start_broker(
        write_settings(tmp_path, "[challenges]\nmax_values_per_name = 3\n")
    )
    api = Api(running, openapi)
    token = await running.token("web1", ["example.test"])
    values = [f"value-{i}" for i in range(4)]
    for value in values[:3]:
        status, _ = await api.call(
            "POST", "/v1/present", token, json={"domain": "example.test", "value": value}
        )
        assert status == 201
    status, body = await api.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": values[3]}
    )
    assert (status, body["code"]) == (409, "too-many-values")
    status, _ = await api.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": values[0]}
    )
    assert status == 200  # a repeat of a present value is still accepted at the cap
    await api.call(
        "POST", "/v1/cleanup", token, json={"domain": "example.test", "value": values[0]}
    )
    status, _ = await api.call(
        "POST", "/v1/present", token, json={"domain": "example.test", "value": values[3]}
    )
    assert status == 201
    assert (await running.txt("_acme-challenge.example.test"))[1] == sorted(values[1:])
