"""Propagation through the API: present with wait, per-server state, checks of any name."""

from __future__ import annotations

import dns.name
import dns.rrset

from tests.peers import free_dns_port
from tests.support import Api, Running, write_settings

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


async def test_present_with_wait_answers_once_the_embedded_servers_serve_it(
    api: Api, running: Running
):
    token = await running.token("web1", ["example.test"])
    status, record = await api.call(
        "POST",
        "/v1/present",
        token,
        json={"domain": "*.example.test", "value": VALUE, "wait": True, "timeout": 10},
    )
    assert status == 201
    report = record["propagation"]
    assert report["ready"] is True
    assert report["zone"] == "example.test."
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    assert [(s["address"], s["port"], s["seen"]) for s in report["servers"]] == [(host, port, True)]
    status, seen = await api.call(
        "GET", f"/v1/challenges/{record['id']}", token, template="/v1/challenges/{id}"
    )
    assert (status, seen["propagation"]["ready"]) == (200, True)
    _, metrics, _ = await running.call("GET", "/metrics")
    assert 'dns01_broker_propagation_checks_total{outcome="ready"} 1.0' in metrics.splitlines()
    assert "dns01_broker_propagation_seconds_count 1.0" in metrics.splitlines()


async def test_a_delegated_name_is_checked_through_its_cname(api: Api, running: Running):
    target = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.test."
    origin = "_acme-challenge.app.example.test."
    zone = running.broker.zone_set.find(dns.name.from_text(origin))
    assert zone is not None
    zone.add_static(dns.rrset.from_text(origin, 60, "IN", "CNAME", target))
    token = await running.token("web1", ["app.example.test"])
    status, record = await api.call(
        "POST",
        "/v1/present",
        token,
        json={"domain": "app.example.test", "value": VALUE, "wait": True},
    )
    assert status == 201
    assert record["propagation"]["fqdn"] == origin
    assert record["propagation"]["target"] == target
    assert record["propagation"]["ready"] is True


async def test_propagation_check_of_any_name_in_scope(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    query = f"/v1/propagation?domain=example.test&value={VALUE}"
    status, report = await api.call("GET", query, token)
    assert (status, report["ready"]) == (200, False)
    assert report["servers"][0]["answered"] is True
    assert report["servers"][0]["seen"] is False
    await api.call("POST", "/v1/present", token, json={"domain": "example.test", "value": VALUE})
    status, report = await api.call("GET", query, token)
    assert (status, report["ready"]) == (200, True)
    status, problem = await api.call(
        "GET", f"/v1/propagation?fqdn=_acme-challenge.www.example.test&value={VALUE}", token
    )
    assert (status, problem["code"]) == (403, "forbidden-name")
    for bad in (
        "/v1/propagation?domain=example.test",
        f"/v1/propagation?value={VALUE}",
        f"/v1/propagation?domain=example.test&value={VALUE}&T=x",
    ):
        status, problem = await api.call("GET", bad, token)
        assert (status, problem["code"]) == (400, "invalid-request"), bad


async def test_a_missed_deadline_is_504_with_the_lagging_server_and_the_record_stays(
    start_broker, tmp_path, openapi
):
    own, silent = free_dns_port(), free_dns_port()
    servers = f'["127.0.0.1:{own}", "127.0.0.1:{silent}"]'
    running = await start_broker(
        write_settings(
            tmp_path,
            f'[propagation]\nquery_timeout = 0.2\nnameservers = {{ "example.test" = {servers} }}\n',
            DNS01_BROKER_DNS__LISTEN=f"127.0.0.1:{own}",
        )
    )
    api = Api(running, openapi)
    token = await running.token("web1", ["example.test"])
    status, problem = await api.call(
        "POST",
        "/v1/present",
        token,
        json={"domain": "example.test", "value": VALUE, "wait": True, "timeout": 1},
    )
    assert (status, problem["code"]) == (504, "propagation-timeout")
    assert problem["retryable"] is True
    assert "deadline passed" in problem["detail"]
    states = {s["port"]: s for s in problem["propagation"]["servers"]}
    assert states[own]["seen"] is True
    assert states[silent]["seen"] is False
    assert states[silent]["error"]
    assert f"127.0.0.1:{silent}" in problem["detail"]
    assert await running.txt("_acme-challenge.example.test") == ("NOERROR", [VALUE])
    assert problem["challenge"]["state"] == "present"


async def test_a_bad_wait_timeout_is_400_and_changes_nothing(api: Api, running: Running):
    token = await running.token("web1", ["example.test"])
    for timeout in (0, -1, 601, "10"):
        status, problem = await api.call(
            "POST",
            "/v1/present",
            token,
            json={"domain": "example.test", "value": VALUE, "wait": True, "timeout": timeout},
        )
        assert (status, problem["code"]) == (400, "invalid-request")
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])
