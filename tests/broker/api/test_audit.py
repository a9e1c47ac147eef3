"""The audit log: every face's token, registration, challenge and certificate events and
refused attempts are recorded (who, from where, what, on what, how it ended), read back
through GET /v1/audit (admin only, filtered, paged newest first), purged after the
retention, and never hold a secret or a TXT value. Token rotation: a new secret, the old
one refused at once."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import dns.rcode
import dns.tsig
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.acme.csr import make_csr
from broker.audit import AuditLog, event
from broker.metrics import Metrics
from broker.store import AuditQuery
from broker.tsig import TsigKey
from tests.broker.test_dnsupdate import send, tsig_token, update
from tests.support import Api, Running, write_settings

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
OTHER = "x" * 43
BODY = {"domain": "www.example.test", "value": VALUE}
FQDN = "_acme-challenge.www.example.test."


async def events(api: Api, query: str = "", token: str | None = None) -> list[dict[str, Any]]:
    """Every event written so far (the queue drained first), newest first."""
    running = api.running
    assert running.broker.audit is not None
    await running.broker.audit.drain()
    status, body = await api.call(
        "GET", f"/v1/audit{query}", token or running.admin_token, template="/v1/audit"
    )
    assert status == 200, body
    found: list[dict[str, Any]] = body["events"]
    return found


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(face, action, actor, target, result) oldest first, the bootstrap token left out."""
    return [
        (e["face"], e["action"], e["actor"], e["target"], e["result"])
        for e in reversed(found)
        if e["face"] != "broker"
    ]


async def test_native_present_cleanup_and_refusals_are_recorded(api: Api, running: Running):
    token = await running.token("web1", ["www.example.test"])
    assert (await api.call("POST", "/v1/present", token, json=BODY))[0] == 201
    assert (await api.call("POST", "/v1/cleanup", token, json=BODY))[0] == 200
    outside = {"domain": "other.example.test", "value": VALUE}
    assert (await api.call("POST", "/v1/present", token, json=outside))[0] == 403
    assert (await api.call("POST", "/v1/present", "d01_nope", json=BODY))[0] == 401
    found = await events(api)
    assert summary(found) == [
        ("api", "present", "web1", FQDN, "ok"),
        ("api", "cleanup", "web1", FQDN, "ok"),
        ("api", "present", "web1", "_acme-challenge.other.example.test.", "forbidden-name"),
        ("api", "present", "-", "-", "unauthorized"),
    ]
    assert {e["source"] for e in found} == {"127.0.0.1", "-"}
    assert all(e["source"] == "127.0.0.1" for e in found if e["face"] == "api")


async def test_refused_requests_to_other_routes_are_recorded_as_access(api: Api, running: Running):
    token = await running.token("web1", ["www.example.test"])
    assert (await api.call("GET", "/v1/tokens", token))[0] == 403
    assert (await api.call("GET", "/v1/registrations"))[0] == 401
    assert (await api.call("GET", "/v1/audit", token))[0] == 403
    assert summary(await events(api)) == [
        ("api", "access", "web1", "GET /v1/tokens", "admin-required"),
        ("api", "access", "-", "GET /v1/registrations", "unauthorized"),
        ("api", "access", "web1", "GET /v1/audit", "admin-required"),
    ]


async def test_acmedns_register_update_and_delete_are_recorded(api: Api, running: Running):
    status, account, _ = await running.call("POST", "/register")
    assert status == 201
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    body = {"subdomain": account["subdomain"], "txt": VALUE}
    assert (await running.call("POST", "/update", json=body, headers=headers))[0] == 200
    wrong = {**headers, "X-Api-Key": "k" * 40}
    assert (await running.call("POST", "/update", json=body, headers=wrong))[0] == 401
    path = f"/v1/registrations/{account['username']}"
    status, _ = await api.call(
        "DELETE", path, running.admin_token, template="/v1/registrations/{username}"
    )
    assert status == 200
    user, fulldomain = account["username"], account["fulldomain"]
    assert summary(await events(api)) == [
        ("acme-dns", "registration.create", "-", user, "ok"),
        ("acme-dns", "present", f"acmedns:{user}", fulldomain, "ok"),
        ("acme-dns", "present", "-", "-", "forbidden"),
        ("api", "registration.delete", "admin", user, "ok"),
    ]


async def test_httpreq_present_and_cleanup_are_recorded(api: Api, running: Running):
    token = await running.token("lego", ["*.example.test"])
    basic = "Basic " + base64.b64encode(f"lego:{token}".encode()).decode()
    body = {"fqdn": FQDN, "value": VALUE}
    for path in ("/present", "/cleanup"):
        status, _, _ = await running.call("POST", path, json=body, headers={"Authorization": basic})
        assert status == 200
    status, _, _ = await running.call(
        "POST", "/present", json=body, headers={"Authorization": "Basic " + "x" * 8}
    )
    assert status == 401
    assert summary(await events(api)) == [
        ("httpreq", "present", "lego", FQDN, "ok"),
        ("httpreq", "cleanup", "lego", FQDN, "ok"),
        ("httpreq", "present", "-", "-", "unauthorized"),
    ]


async def test_rfc2136_updates_are_recorded_with_the_peer_address(api: Api, running: Running):
    key = await tsig_token(running, "nsupdate", ["www.example.test"])
    message = update(key)
    message.add(FQDN, 60, "TXT", VALUE)
    assert (await send(running, message)).rcode() == dns.rcode.NOERROR
    message = update(key)
    message.delete(FQDN, "TXT", VALUE)
    assert (await send(running, message)).rcode() == dns.rcode.NOERROR
    message = update(key)
    message.add("_acme-challenge.other.example.test.", 60, "TXT", VALUE)
    assert (await send(running, message)).rcode() == dns.rcode.REFUSED
    message = update(None)
    message.add(FQDN, 60, "TXT", VALUE)
    assert (await send(running, message)).rcode() == dns.rcode.REFUSED
    message = update(TsigKey("ghost.", "hmac-sha256", b"k" * 32))
    message.add(FQDN, 60, "TXT", VALUE)
    with pytest.raises(dns.tsig.PeerBadKey):
        await send(running, message)
    found = await events(api)
    assert summary(found) == [
        ("rfc2136", "present", "nsupdate", FQDN, "ok"),
        ("rfc2136", "cleanup", "nsupdate", FQDN, "ok"),
        ("rfc2136", "update", "nsupdate", "nsupdate.", "refused"),
        ("rfc2136", "update", "-", "-", "unsigned"),
        ("rfc2136", "update", "-", "ghost.", "badkey"),
    ]
    assert {e["source"] for e in found if e["face"] == "rfc2136"} == {"127.0.0.1"}


async def test_token_events_and_rotation(api: Api, running: Running):
    admin = running.admin_token
    status, created = await api.call(
        "POST", "/v1/tokens", admin, json={"name": "ci", "allow": ["*.example.test"]}
    )
    assert status == 201
    status, rotated = await api.call(
        "POST", "/v1/tokens/ci/rotate", admin, template="/v1/tokens/{name}/rotate"
    )
    assert status == 200
    assert rotated["token"] != created["token"]
    assert rotated["allow"] == ["*.example.test"]
    assert (await api.call("POST", "/v1/present", created["token"], json=BODY))[0] == 401
    assert (await api.call("POST", "/v1/present", rotated["token"], json=BODY))[0] == 201
    status, _ = await api.call(
        "POST", "/v1/tokens/ghost/rotate", admin, template="/v1/tokens/{name}/rotate"
    )
    assert status == 404
    await api.call("DELETE", "/v1/tokens/ci", admin, template="/v1/tokens/{name}")
    assert (await api.call("POST", "/v1/present", rotated["token"], json=BODY))[0] == 401
    assert summary(await events(api)) == [
        ("api", "token.create", "admin", "ci", "ok"),
        ("api", "token.rotate", "admin", "ci", "ok"),
        ("api", "present", "-", "-", "unauthorized"),
        ("api", "present", "ci", FQDN, "ok"),
        ("api", "token.rotate", "admin", "ghost", "not-found"),
        ("api", "token.revoke", "admin", "ci", "ok"),
        ("api", "present", "-", "-", "unauthorized"),
    ]


async def test_rotation_keeps_the_tsig_key_unless_asked_and_the_old_key_then_fails(
    api: Api, running: Running
):
    admin = running.admin_token
    key = await tsig_token(running, "ns", ["www.example.test"])
    template = "/v1/tokens/{name}/rotate"
    status, kept = await api.call("POST", "/v1/tokens/ns/rotate", admin, template=template)
    assert status == 200
    assert kept["tsig"] == {"name": "ns.", "algorithm": "hmac-sha256"}
    message = update(key)
    message.add(FQDN, 60, "TXT", VALUE)
    assert (await send(running, message)).rcode() == dns.rcode.NOERROR
    status, renewed = await api.call(
        "POST", "/v1/tokens/ns/rotate", admin, template=template, json={"tsig": True}
    )
    assert status == 200
    assert renewed["tsig"]["secret"] != key.secret_b64
    message = update(key)
    message.add(FQDN, 60, "TXT", OTHER)
    with pytest.raises(dns.tsig.PeerBadSignature):
        await send(running, message)
    plain = await running.token("plain", ["example.test"])
    assert plain
    status, given = await api.call(
        "POST", "/v1/tokens/plain/rotate", admin, template=template, json={"tsig": True}
    )
    assert status == 200
    assert given["tsig"]["name"] == "plain."
    assert given["tsig"]["algorithm"] == "hmac-sha256"
    assert given["tsig"]["secret"]


async def test_the_bootstrap_admin_token_can_be_rotated(api: Api, running: Running):
    old = running.admin_token
    status, rotated = await api.call(
        "POST", "/v1/tokens/admin/rotate", old, template="/v1/tokens/{name}/rotate"
    )
    assert status == 200
    assert rotated["admin"] is True
    assert (await api.call("GET", "/v1/tokens", old))[0] == 401
    assert (await api.call("GET", "/v1/tokens", rotated["token"]))[0] == 200


async def test_a_non_admin_token_cannot_make_tokens_or_widen_itself_anywhere(
    api: Api, running: Running
):
    token = await running.token("web1", ["www.example.test"])
    template = "/v1/tokens/{name}/rotate"
    attempts = [
        ("POST", "/v1/tokens", {"name": "web1b", "allow": ["*.example.test"]}, None),
        ("POST", "/v1/tokens", {"name": "root", "admin": True}, None),
        ("POST", "/v1/tokens/web1/rotate", None, template),
        ("POST", "/v1/tokens/admin/rotate", None, template),
        ("DELETE", "/v1/tokens/web1", None, "/v1/tokens/{name}"),
        ("GET", "/v1/tokens", None, None),
        ("GET", "/v1/audit", None, None),
    ]
    for method, path, body, path_template in attempts:
        status, problem = await api.call(method, path, token, json=body, template=path_template)
        assert (status, problem["code"]) == (403, "admin-required"), path
    # acme-dns registration (closed to token holders only when configured) makes an
    # account limited to its own new name, never a token or a wider scope:
    _, whoami = await api.call("GET", "/v1/whoami", token)
    assert whoami == {
        "name": "web1",
        "allow": ["www.example.test"],
        "admin": False,
        "persist": False,
    }
    listing = await running.broker.store.list_tokens(include_revoked=True)
    assert sorted(t.name for t in listing) == ["admin", "web1"]


async def test_filters_and_paging_newest_first(api: Api, running: Running):
    web1 = await running.token("web1", ["*.example.test"])
    web2 = await running.token("web2", ["*.example.test"])
    for i in range(5):
        body = {"domain": f"h{i}.example.test", "value": VALUE}
        await api.call("POST", "/v1/present", web1 if i % 2 == 0 else web2, json=body)
    await api.call("POST", "/v1/cleanup", web1, json={"domain": "h0.example.test", "value": VALUE})
    everything = await events(api)
    assert [e["at"] for e in everything] == sorted((e["at"] for e in everything), reverse=True)
    by_web1 = await events(api, "?actor=web1")
    assert [(e["action"], e["target"]) for e in by_web1] == [
        ("cleanup", "_acme-challenge.h0.example.test."),
        ("present", "_acme-challenge.h4.example.test."),
        ("present", "_acme-challenge.h2.example.test."),
        ("present", "_acme-challenge.h0.example.test."),
    ]
    cleanups = await events(api, "?action=cleanup")
    assert [e["actor"] for e in cleanups] == ["web1"]
    seen: list[int] = []
    query = "?action=present&limit=2"
    while True:
        assert running.broker.audit is not None
        await running.broker.audit.drain()
        status, page = await api.call(
            "GET", "/v1/audit" + query, running.admin_token, template="/v1/audit"
        )
        assert status == 200
        assert len(page["events"]) <= 2
        seen += [e["id"] for e in page["events"]]
        if page["next"] is None:
            break
        query = f"?action=present&limit=2&cursor={page['next']}"
    presents = [e["id"] for e in everything if e["action"] == "present"]
    assert seen == presents
    assert len(seen) == 5
    middle = everything[len(everything) // 2]["at"]
    newer = await events(api, f"?since={middle}")
    older = await events(api, f"?until={middle}")
    assert newer
    assert older
    assert {e["id"] for e in newer} | {e["id"] for e in older} == {e["id"] for e in everything}
    assert not {e["id"] for e in newer} & {e["id"] for e in older}


@pytest.mark.parametrize(
    "query",
    [
        "?since=yesterday",
        "?until=2026-12-03T10:00:00",  # no offset
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?cursor=nope",
        "?actors=web1",
    ],
)
async def test_bad_queries_are_400_and_say_what_to_fix(api: Api, running: Running, query: str):
    status, problem = await api.call(
        "GET", "/v1/audit" + query, running.admin_token, template="/v1/audit"
    )
    assert (status, problem["code"]) == (400, "invalid-request")
    assert problem["errors"][0]["pointer"] in (
        "/since",
        "/until",
        "/limit",
        "/cursor",
        "/actors",
    )


async def test_retention_purges_old_events_on_the_leaders_pass(api: Api, running: Running):
    store = running.broker.store
    now = time.time()
    old = event("api", "present", FQDN, actor="old", at=now - 91 * 86400)
    recent = event("api", "present", FQDN, actor="recent", at=now - 89 * 86400)
    await store.add_audit_events([old, recent])
    assert running.broker.reconciler is not None
    await running.broker.reconciler.run_once()
    actors = {e["actor"] for e in await events(api)}
    assert "recent" in actors
    assert "old" not in actors


async def test_no_secret_or_txt_value_is_ever_stored(api: Api, running: Running):
    admin = running.admin_token
    _, created = await api.call(
        "POST", "/v1/tokens", admin, json={"name": "ci", "allow": ["*.example.test"], "tsig": True}
    )
    _, rotated = await api.call(
        "POST", "/v1/tokens/ci/rotate", admin, template="/v1/tokens/{name}/rotate",
        json={"tsig": True},
    )  # fmt: skip
    await api.call("POST", "/v1/present", rotated["token"], json=BODY)
    await api.call("POST", "/v1/present", created["token"], json=BODY)
    _, account, _ = await running.call("POST", "/register")
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    body = {"subdomain": account["subdomain"], "txt": OTHER}
    await running.call("POST", "/update", json=body, headers=headers)
    basic = "Basic " + base64.b64encode(f"x:{rotated['token']}".encode()).decode()
    await running.call(
        "POST", "/present", json={"fqdn": FQDN, "value": VALUE}, headers={"Authorization": basic}
    )
    pasted = f"/v1/tokens/{rotated['token']}"  # a secret where a name goes: 404, recorded
    status, _ = await api.call("DELETE", pasted, admin, template="/v1/tokens/{name}")
    assert status == 404
    assert running.broker.audit is not None
    await running.broker.audit.drain()
    stored = await running.broker.store.audit_events(AuditQuery(limit=1000))
    assert len(stored) >= 7
    key = rotated["token"].split("_")[1]
    assert stored[0].target == f"d01_{key}_[redacted]"
    secrets = [
        admin, created["token"], rotated["token"], created["tsig"]["secret"],
        rotated["tsig"]["secret"], account["password"], VALUE, OTHER,
    ]  # fmt: skip
    for record in stored:
        for field in (record.actor, record.source, record.face, record.action, record.target,
                      record.result):  # fmt: skip
            for secret in secrets:
                assert secret not in field
                assert secret[-20:] not in field


async def test_forwarded_for_from_a_trusted_proxy_is_the_source(start_broker, tmp_path: Path):
    running = await start_broker(
        write_settings(tmp_path, DNS01_BROKER_HTTP__TRUSTED_PROXIES="127.0.0.1/32")
    )
    token = await running.token("web1", ["www.example.test"])
    status, _, _ = await running.call(
        "POST", "/v1/present", token, json=BODY, headers={"X-Forwarded-For": "192.0.2.7"}
    )
    assert status == 201
    await running.broker.audit.drain()
    stored = await running.broker.store.audit_events(AuditQuery(action="present"))
    assert [(e.actor, e.source) for e in stored] == [("web1", "192.0.2.7")]


async def test_a_full_queue_drops_and_counts_instead_of_waiting(running: Running):
    metrics = Metrics()
    log = AuditLog(running.broker.store, metrics, queue_size=3)
    for i in range(5):
        log.record("api", "present", f"n{i}", actor="a")
    assert log.pending == 3
    assert metrics.registry.get_sample_value("dns01_broker_audit_events_dropped_total") == 2
    await log.close()
    stored = await running.broker.store.audit_events(AuditQuery(actor="a"))
    assert [e.target for e in stored] == ["n2", "n1", "n0"]


async def test_events_queued_at_shutdown_are_written(start_broker):
    running = await start_broker()
    store, audit = running.broker.store, running.broker.audit
    assert audit is not None
    audit.record("api", "present", FQDN, actor="last")  # queued; nothing awaited since
    assert audit.pending >= 1
    await running.broker.stop()
    await store.open()
    try:
        stored = await store.audit_events(AuditQuery(actor="last"))
    finally:
        await store.close()
    assert [e.target for e in stored] == [FQDN]


async def test_certificate_orders_are_recorded_from_submission_to_failure(
    start_broker, tmp_path: Path
):
    # Nothing listens on the discard port: the order fails at once, as a CA being down.
    settings = write_settings(tmp_path, '[acme]\ndirectory = "https://127.0.0.1:9/directory"\n')
    running = await start_broker(settings)
    token = await running.token("certs", ["www.example.test"])
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, ["www.example.test"]).public_bytes(serialization.Encoding.PEM).decode()
    status, order, _ = await running.call(
        "POST", "/v1/certificates", token, json={"csr": csr, "wait": True, "timeout": 10}
    )
    assert status in (200, 201, 202), order
    other = make_csr(key, ["other.example.test"]).public_bytes(serialization.Encoding.PEM).decode()
    status, _, _ = await running.call("POST", "/v1/certificates", token, json={"csr": other})
    assert status == 403
    audit = running.broker.audit
    assert audit is not None
    await audit.drain()
    stored = await running.broker.store.audit_events(AuditQuery(actor="certs"))
    assert [(e.face, e.action, e.target, e.result) for e in reversed(stored)] == [
        ("api", "certificate.order", order["id"], "ok"),
        ("acme", "certificate.failed", order["id"], "acme-failed"),
        ("api", "certificate.order", "-", "forbidden-name"),
    ]


async def test_a_token_over_its_rate_limit_is_recorded_as_rate_limited(
    start_broker, tmp_path: Path
):
    settings = write_settings(tmp_path, "[http.rate_limit]\ntoken_rate = 0.001\ntoken_burst = 1\n")
    running = await start_broker(settings)
    token = await running.token("web1", ["www.example.test"])
    assert (await running.call("POST", "/v1/present", token, json=BODY))[0] == 201
    assert (await running.call("POST", "/v1/present", token, json=BODY))[0] == 429
    assert running.broker.audit is not None
    await running.broker.audit.drain()
    stored = await running.broker.store.audit_events(AuditQuery(actor="web1"))
    assert [e.result for e in reversed(stored)] == ["ok", "rate-limited"]
