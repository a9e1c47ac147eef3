"""dns-persist-01 grants over the native API: a standing permission to issue, written at
``_validation-persist.<name>`` in RFC 8659 issue-value syntax, made only by admins and
tokens with the persist right, listed, removed, expired after persistUntil by the
reconciler, and audited — on the embedded zone and on Route53 (moto)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from broker.persist import PersistGrant, parse_issue_value
from tests.broker.api.test_audit import events, summary
from tests.providers.aws import MotoServer, route53_client, route53_config, route53_txt
from tests.support import Api, Running, write_settings

ISSUER = "ca.example.net"
ACCOUNT = "https://acme.example.net/acme/acct/1234"
OTHER_ACCOUNT = "https://acme.example.net/acme/acct/5678"
NAME = "_validation-persist.www.example.test."
EXACT = re.compile(
    r"(?P<issuer>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?); accounturi=(?P<uri>[\x21-\x3a\x3c-\x7e]+)"
    r"(?P<wildcard>; policy=wildcard)?(?:; persistUntil=(?P<until>[0-9]+))?"
)
"""The one form the broker writes, read independently of broker.persist."""


def grant_body(domain: str = "www.example.test", **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "issuer": ISSUER, "account_uri": ACCOUNT, **extra}


async def test_admin_grant_is_served_listed_and_removed(api: Api, running: Running):
    admin = running.admin_token
    status, body = await api.call(
        "POST", "/v1/persist", admin, json=grant_body(wildcard=True, wait=True, timeout=10)
    )
    assert status == 201, body
    assert body["fqdn"] == NAME
    assert body["propagation"]["ready"] is True
    value = f"{ISSUER}; accounturi={ACCOUNT}; policy=wildcard"
    assert body["value"] == value
    assert (body["issuer"], body["account_uri"], body["wildcard"]) == (ISSUER, ACCOUNT, True)
    assert body["persist_until"] is None
    assert await running.txt(NAME) == ("NOERROR", [value])

    again = await api.call("POST", "/v1/persist", admin, json=grant_body(wildcard=True))
    assert again[0] == 200
    assert again[1]["id"] == body["id"]

    status, listing = await api.call("GET", "/v1/persist", admin)
    assert status == 200
    assert [g["id"] for g in listing["grants"]] == [body["id"]]

    status, removed = await api.call(
        "DELETE", f"/v1/persist/{body['id']}", admin, template="/v1/persist/{id}"
    )
    assert (status, removed["state"]) == (200, "removed")
    assert (await running.txt(NAME))[1] == []
    assert (await api.call("GET", "/v1/persist", admin))[1]["grants"] == []
    status, _ = await api.call(
        "DELETE", f"/v1/persist/{body['id']}", admin, template="/v1/persist/{id}"
    )
    assert status == 404


async def test_record_reads_back_strictly_as_rfc8659_issue_value(api: Api, running: Running):
    until = int(time.time()) + 86400
    status, body = await api.call(
        "POST", "/v1/persist", running.admin_token, json=grant_body(persist_until=until)
    )
    assert status == 201, body
    (served,) = (await running.txt(NAME))[1]
    match = EXACT.fullmatch(served)
    assert match is not None, served
    assert match["issuer"] == ISSUER
    assert match["uri"] == ACCOUNT
    assert match["wildcard"] is None
    assert match["until"] == str(until)
    assert parse_issue_value(served) == (
        ISSUER,
        {"accounturi": ACCOUNT, "persistuntil": str(until)},
    )
    assert PersistGrant.parse(served) == PersistGrant(ISSUER, ACCOUNT, False, until)
    assert body["persist_until"].startswith(time.strftime("%Y-%m-%d", time.gmtime(until)))


async def test_scoped_token_needs_the_persist_right(api: Api, running: Running):
    plain = await running.token("web1", ["www.example.test"])
    status, problem = await api.call("POST", "/v1/persist", plain, json=grant_body())
    assert (status, problem["code"]) == (403, "persist-right-required")
    assert (await running.txt(NAME))[1] == []

    granting = await running.token("ops", ["www.example.test"], persist=True)
    status, body = await api.call("POST", "/v1/persist", granting, json=grant_body())
    assert (status, body["owner"]) == (201, "ops")
    assert (await api.call("GET", "/v1/persist", plain))[1]["grants"][0]["id"] == body["id"]
    status, problem = await api.call(
        "DELETE", f"/v1/persist/{body['id']}", plain, template="/v1/persist/{id}"
    )
    assert (status, problem["code"]) == (403, "persist-right-required")
    assert len((await running.txt(NAME))[1]) == 1


async def test_names_outside_the_tokens_scopes_are_refused(api: Api, running: Running):
    granting = await running.token("ops", ["www.example.test"], persist=True)
    status, problem = await api.call(
        "POST", "/v1/persist", granting, json=grant_body("other.example.test")
    )
    assert (status, problem["code"]) == (403, "forbidden-name")
    status, body = await api.call(
        "POST", "/v1/persist", running.admin_token, json=grant_body("other.example.test")
    )
    assert status == 201
    assert (await api.call("GET", "/v1/persist", granting))[1]["grants"] == []
    status, _ = await api.call(
        "DELETE", f"/v1/persist/{body['id']}", granting, template="/v1/persist/{id}"
    )
    assert status == 404


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("issuer", "ca.example.net; accounturi=https://evil.example/acct/9"),
        ("issuer", "ca example.net"),
        ("issuer", "ca_example.net"),
        ("issuer", "localhost"),
        ("account_uri", "https://acme.example.net/acct/1; policy=wildcard"),
        ("account_uri", "https://acme.example.net/acct/1;persistUntil=9999999999"),
        ("account_uri", "http://acme.example.net/acct/1"),
        ("account_uri", "https://acme.example.net/acct 1"),
        ("account_uri", "https://acme.example.net/acct/1\t"),
        ("account_uri", "https://acme.example.net/acct/\x01"),
        ("account_uri", 'https://acme.example.net/"acct'),
        ("account_uri", "https://acme.example.net/acct/ü"),
        ("account_uri", "acct/1"),
        ("account_uri", "https:///acct/1"),
    ],
)
async def test_malformed_issuer_or_account_uri_is_refused_and_nothing_written(
    api: Api, running: Running, field: str, text: str
):
    body = {**grant_body(), field: text}
    status, problem = await api.call("POST", "/v1/persist", running.admin_token, json=body)
    assert (status, problem["code"]) == (400, "invalid-request"), problem
    assert [e["pointer"] for e in problem["errors"]] == [f"/{field}"]
    assert (await running.txt(NAME))[1] == []


async def test_persist_until_in_the_past_is_refused(api: Api, running: Running):
    body = grant_body(persist_until=int(time.time()) - 1)
    status, problem = await api.call("POST", "/v1/persist", running.admin_token, json=body)
    assert (status, problem["errors"][0]["pointer"]) == (400, "/persist_until")


async def test_reconciler_removes_a_grant_after_persist_until(api: Api, running: Running):
    until = int(time.time()) + 2
    status, body = await api.call(
        "POST", "/v1/persist", running.admin_token, json=grant_body(persist_until=until)
    )
    assert status == 201
    reconciler = running.broker.reconciler
    assert reconciler is not None
    await reconciler.run_once()
    assert len((await running.txt(NAME))[1]) == 1
    await asyncio.sleep(until + 0.2 - time.time())
    await reconciler.run_once()
    assert (await running.txt(NAME))[1] == []
    record = await running.broker.store.challenge(body["id"])
    assert record is not None
    assert record.state.value == "expired"
    expired = [e for e in await events(api) if e["action"] == "persist.expire"]
    assert [(e["actor"], e["face"]) for e in expired] == [("reconciler", "broker")]
    assert body["id"] in expired[0]["target"]


async def test_grants_have_no_lease_cap(api: Api, running: Running):
    status, body = await api.call("POST", "/v1/persist", running.admin_token, json=grant_body())
    assert status == 201
    record = await running.broker.store.challenge(body["id"])
    assert record is not None
    assert record.expires_at > time.time() + 100 * 365 * 86400
    await running.broker.service.expire_due()
    assert len((await running.txt(NAME))[1]) == 1


async def test_other_values_at_the_name_are_kept(api: Api, running: Running):
    admin = running.admin_token
    first = (await api.call("POST", "/v1/persist", admin, json=grant_body()))[1]
    other = grant_body(account_uri=OTHER_ACCOUNT)
    second = (await api.call("POST", "/v1/persist", admin, json=other))[1]
    assert len((await running.txt(NAME))[1]) == 2
    await api.call("DELETE", f"/v1/persist/{first['id']}", admin, template="/v1/persist/{id}")
    assert (await running.txt(NAME))[1] == [second["value"]]


async def test_new_terms_for_the_same_account_replace_the_grant(api: Api, running: Running):
    admin = running.admin_token
    first = (await api.call("POST", "/v1/persist", admin, json=grant_body()))[1]
    status, second = await api.call("POST", "/v1/persist", admin, json=grant_body(wildcard=True))
    assert (status, second["replaced"]) == (201, [first["id"]])
    assert (await running.txt(NAME))[1] == [second["value"]]
    changes = [e for e in await events(api) if e["action"] == "persist.change"]
    assert len(changes) == 1
    assert first["id"] in changes[0]["target"]


async def test_challenge_faces_cannot_write_or_remove_a_grant_name(api: Api, running: Running):
    admin = running.admin_token
    grant = (await api.call("POST", "/v1/persist", admin, json=grant_body()))[1]
    status, body, _ = await running.call(
        "POST", "/present", admin, json={"fqdn": NAME, "value": "x" * 43}
    )
    assert status == 403, body
    status, body, _ = await running.call(
        "POST", "/cleanup", admin, json={"fqdn": NAME, "value": grant["value"]}
    )
    assert status in (400, 403), body
    assert (await running.txt(NAME))[1] == [grant["value"]]


async def test_grants_and_removals_are_audited_with_their_actor(api: Api, running: Running):
    granting = await running.token("ops", ["www.example.test"], persist=True)
    plain = await running.token("web1", ["www.example.test"])
    body = (await api.call("POST", "/v1/persist", granting, json=grant_body()))[1]
    await api.call("POST", "/v1/persist", plain, json=grant_body())
    await api.call("DELETE", f"/v1/persist/{body['id']}", granting, template="/v1/persist/{id}")
    assert [e for e in summary(await events(api)) if e[1].startswith("persist.")] == [
        ("api", "persist.grant", "ops", NAME, "ok"),
        ("api", "persist.grant", "web1", NAME, "persist-right-required"),
        ("api", "persist.revoke", "ops", f"{NAME} {body['id']}", "ok"),
    ]


async def test_tokens_with_the_persist_right_are_made_over_the_api(api: Api, running: Running):
    status, made = await api.call(
        "POST",
        "/v1/tokens",
        running.admin_token,
        json={"name": "granter", "allow": ["example.test"], "persist": True},
    )
    assert (status, made["persist"]) == (201, True)
    status, me = await api.call("GET", "/v1/whoami", made["token"])
    assert (status, me["persist"]) == (200, True)
    status, body = await api.call(
        "POST", "/v1/persist", made["token"], json=grant_body("example.test")
    )
    assert (status, body["fqdn"]) == (201, "_validation-persist.example.test.")


async def test_route53_grant_keeps_a_foreign_value_at_the_name(
    start_broker: Any, tmp_path: Path, moto: MotoServer, openapi: Any
):
    running = await start_broker(write_settings(tmp_path, route53_config(moto, "persist")))
    api = Api(running, openapi)
    name = "_validation-persist.app.r53.test."
    client = route53_client(moto)
    zone = client.list_hosted_zones()["HostedZones"][0]["Id"]
    foreign = "otherca.example; accounturi=https://otherca.example/acct/7"
    client.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": "TXT",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": f'"{foreign}"'}],
                    },
                }
            ]
        },
    )
    admin = running.admin_token
    status, body = await api.call("POST", "/v1/persist", admin, json=grant_body("app.r53.test"))
    assert (status, body["provider"]) == (201, "aws"), body
    assert route53_txt(moto, name) == sorted([foreign, body["value"]])
    assert EXACT.fullmatch(body["value"])
    status, _ = await api.call(
        "DELETE", f"/v1/persist/{body['id']}", admin, template="/v1/persist/{id}"
    )
    assert status == 200
    assert route53_txt(moto, name) == [foreign]


async def test_a_grant_is_served_again_after_a_restart(
    start_broker: Any, tmp_path: Path, openapi: Any
):
    settings = write_settings(tmp_path)
    first = await start_broker(settings)
    status, body = await Api(first, openapi).call(
        "POST", "/v1/persist", first.admin_token, json=grant_body()
    )
    assert status == 201
    await first.broker.stop()
    second = await start_broker(settings)
    assert (await second.txt(NAME))[1] == [body["value"]]
