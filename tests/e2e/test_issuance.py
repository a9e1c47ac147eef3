"""The broker's own ACME client against pebble: `dns01-broker issue / renew / revoke`
(local broker and remote with a scoped token) and POST /v1/certificates."""

from __future__ import annotations

import asyncio
import stat
import time
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.config import load_settings
from broker.store import CertificateOrderRecord, OrderState
from tests.e2e.world import World
from tests.peers import free_port, verify_chain
from tests.support import Api, write_config

pytestmark = pytest.mark.timeout(240)


async def test_cli_issues_wildcard_and_apex_through_the_local_broker(world: World, tmp_path):
    out = tmp_path / "cert"
    code, stdout, stderr = await world.cli(*world.issue_args(out, "example.test", "*.example.test"))
    assert code == 0, stderr
    for step in ("order-created", "presenting", "propagated", "challenge-answered", "finalizing"):
        assert step in stdout
    assert stat.S_IMODE((out / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "account.json").stat().st_mode) == 0o600
    assert (out / "fullchain.pem").read_text() == (out / "cert.pem").read_text() + (
        out / "chain.pem"
    ).read_text()
    await verify_chain(
        world.pebble, out / "cert.pem", out / "chain.pem", {"example.test", "*.example.test"}
    )
    assert await world.running.broker.store.live_challenges() == []
    assert await world.running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])


async def test_cli_remote_mode_needs_only_a_scoped_token(world: World, tmp_path):
    token = await world.running.token("web1", ["example.test"])
    remote = ["--server", world.running.url]
    out = tmp_path / "remote"
    code, _, stderr = await world.cli(
        *world.issue_args(out, "example.test", "*.example.test"),
        *remote,
        env={"DNS01_BROKER_TOKEN": token},
    )
    assert code == 0, stderr
    names = {"example.test", "*.example.test"}
    await verify_chain(world.pebble, out / "cert.pem", out / "chain.pem", names)
    code, _, stderr = await world.cli(
        *world.issue_args(tmp_path / "other", "www.example.test"), *remote, "--token", token
    )
    assert code == 1
    assert "token 'web1' may not prove www.example.test" in stderr
    assert not (tmp_path / "other").exists()  # refused before any ACME call
    assert await world.running.broker.store.live_challenges() == []


async def test_renew_when_due_or_forced_then_deploy_and_revoke(world: World, tmp_path):
    out = tmp_path / "cert"
    code, _, stderr = await world.cli(*world.issue_args(out, "example.test"))
    assert code == 0, stderr
    first = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    code, stdout, _ = await world.cli("renew", "--out", str(out))
    assert (code, "not due" in stdout) == (0, True)
    marker = tmp_path / "deployed"
    code, stdout, stderr = await world.cli(
        "renew",
        "--out",
        str(out),
        "--force",
        "--deploy-hook",
        f'echo "$RENEWED_LINEAGE" > {marker}',
    )
    assert code == 0, stderr
    second = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number
    assert marker.read_text().strip() == str(out)
    code, _, stderr = await world.cli("revoke", "--out", str(out), "--reason", "4")
    assert code == 0, stderr
    code, _, stderr = await world.cli("revoke", "--out", str(out))
    assert code == 1
    assert "alreadyRevoked" in stderr


def make_csr(*names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def test_v1_certificates_signs_a_csr_without_seeing_its_key(world: World, tmp_path, openapi):
    api = Api(world.running, openapi)
    token = await world.running.token("web1", ["example.test"])
    csr = make_csr("example.test", "*.example.test")
    status, order = await api.call(
        "POST", "/v1/certificates", token, json={"csr": csr, "wait": True, "timeout": 60}
    )
    assert status == 200, order
    assert order["state"] == "valid"
    assert order["names"] == ["example.test", "*.example.test"]
    chain = x509.load_pem_x509_certificates(order["fullchain_pem"].encode())
    (tmp_path / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:])
    )
    await verify_chain(
        world.pebble,
        tmp_path / "leaf.pem",
        tmp_path / "chain.pem",
        {"example.test", "*.example.test"},
    )
    path = f"/v1/certificates/{order['id']}"
    status, seen = await api.call("GET", path, token, template="/v1/certificates/{id}")
    assert (status, seen["state"]) == (200, "valid")
    other = await world.running.token("web2", ["www.example.test"])
    status, _ = await api.call("GET", path, other, template="/v1/certificates/{id}")
    assert status == 404
    account = await world.running.broker.store.acme_account(world.pebble.url)
    assert account is not None
    assert "ENCRYPTED" in account.key_pem


async def test_v1_certificates_without_wait_is_202_then_valid(world: World, openapi):
    api = Api(world.running, openapi)
    token = await world.running.token("web1", ["app.example.test"])
    status, order = await api.call(
        "POST", "/v1/certificates", token, json={"csr": make_csr("app.example.test")}
    )
    assert (status, order["state"]) == (202, "pending")
    for _ in range(200):
        _, order = await api.call(
            "GET", f"/v1/certificates/{order['id']}", token, template="/v1/certificates/{id}"
        )
        if order["state"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert order["state"] == "valid"


async def test_v1_certificates_refuses_names_outside_the_scope_before_any_acme_call(
    start_broker, tmp_path, openapi
):
    closed = free_port()
    config = write_config(tmp_path, f'[acme]\ndirectory = "https://127.0.0.1:{closed}/dir"\n')
    running = await start_broker(load_settings(config, {}))
    api = Api(running, openapi)
    token = await running.token("web1", ["app.example.test"])
    status, problem = await api.call(
        "POST",
        "/v1/certificates",
        token,
        json={"csr": make_csr("app.example.test", "www.example.test")},
    )
    assert (status, problem["code"]) == (403, "forbidden-name")
    status, problem = await api.call("POST", "/v1/certificates", token, json={"csr": "not a csr"})
    assert (status, problem["code"]) == (400, "invalid-request")
    status, order = await api.call(
        "POST",
        "/v1/certificates",
        token,
        json={"csr": make_csr("app.example.test"), "wait": True, "timeout": 20},
    )
    assert (status, order["state"]) == (200, "invalid")
    assert order["error"]["detail"]


async def test_an_order_whose_replica_died_is_resumed_by_the_leader(world: World, openapi):
    """The replica that ran these orders is gone: its claims lapsed. The leader runs the
    one whose token is live to the end, and refuses the one whose token was revoked."""
    store = world.running.broker.store
    await world.running.token("web1", ["app.example.test"])
    now = time.time()
    orphan = CertificateOrderRecord(
        id="orphan", owner="web1", names=("app.example.test",),
        csr_pem=make_csr("app.example.test"), directory=world.pebble.url,
        state=OrderState.PENDING, created_at=now, updated_at=now,
        claimed_by="replica-that-died", claimed_until=now - 1,
    )  # fmt: skip
    await store.create_order(orphan)
    await world.running.token("gone", ["app.example.test"])
    await store.revoke_token("gone", now)
    await store.create_order(replace(orphan, id="revoked", owner="gone"))

    for _ in range(300):
        finished = [await store.order(i) for i in ("orphan", "revoked")]
        if all(o is not None and o.state is not OrderState.PENDING for o in finished):
            break
        await asyncio.sleep(0.1)
    resumed, refused = finished
    assert resumed is not None
    assert resumed.state is OrderState.VALID
    assert resumed.fullchain_pem is not None
    assert refused is not None
    assert refused.state is OrderState.INVALID
    assert "no longer valid" in (refused.error or "")


async def _until_order(store, order_id: str, done, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        order = await store.order(order_id)
        if order is not None and done(order):
            return order
        await asyncio.sleep(0.1)
    raise AssertionError(f"order {order_id} never got there: {await store.order(order_id)}")


async def test_a_kept_certificate_is_renewed_by_the_leader_with_the_same_csr(
    world: World, tmp_path, openapi
):
    """The leader's reconcile pass renews a kept certificate once a third of its lifetime
    is left; the order then serves the new one (also as PEM at .../latest) and the
    expiry metric follows. A certificate not asked to be kept is left alone."""
    api = Api(world.running, openapi)
    store = world.running.broker.store
    token = await world.running.token("web1", ["www.example.test"])
    csr = make_csr("www.example.test")
    status, kept = await api.call(
        "POST", "/v1/certificates", token,
        json={"csr": csr, "renew": True, "wait": True, "timeout": 60},
    )  # fmt: skip
    assert (status, kept["state"], kept["renew"], kept["renewals"]) == (200, "valid", True, 0)
    leaf = x509.load_pem_x509_certificate(kept["fullchain_pem"].encode())
    assert kept["not_after"].startswith(f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%S}")
    status, once = await api.call(
        "POST", "/v1/certificates", token, json={"csr": csr, "wait": True, "timeout": 60}
    )
    assert (status, once["renew"]) == (200, False)

    now = time.time()
    for order in (kept, once):  # as if issued long ago: two thirds of the lifetime gone
        await store.finish_order(
            order["id"], OrderState.VALID, now,
            fullchain_pem=order["fullchain_pem"], validity=(now - 200, now + 100),
        )  # fmt: skip
    renewed = await _until_order(store, kept["id"], lambda o: o.renewals == 1)
    assert renewed.fullchain_pem != kept["fullchain_pem"]
    new_leaf = x509.load_pem_x509_certificate(renewed.fullchain_pem.encode())
    assert new_leaf.public_key() == leaf.public_key()  # same CSR, the client's own key
    assert renewed.not_after == new_leaf.not_valid_after_utc.timestamp()
    assert renewed.renewal_error is None

    latest = f"/v1/certificates/{kept['id']}/latest"
    async with world.running.session.get(
        world.running.url + latest, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/pem-certificate-chain"
        assert await response.text() == renewed.fullchain_pem
    untouched = await store.order(once["id"])
    assert untouched is not None
    assert (untouched.renewals, untouched.fullchain_pem) == (0, once["fullchain_pem"])

    async with world.running.session.get(world.running.url + "/metrics") as response:
        metrics = await response.text()
    labels = f'name="www.example.test",order="{kept["id"]}"'
    series = f"dns01_broker_certificate_expiry_seconds{{{labels}}} "
    lines = metrics.splitlines()
    values = [float(line[len(series) :]) for line in lines if line.startswith(series)]
    # compared as numbers: the exposition format drops trailing zeros (1.95407764e+09)
    assert values == [renewed.not_after]
    assert once["id"] not in metrics
    assert 'dns01_broker_certificate_renewals_total{outcome="renewed"} 1.0' in metrics


async def test_a_kept_certificate_of_a_revoked_token_is_not_renewed_and_says_why(
    world: World, openapi
):
    api = Api(world.running, openapi)
    store = world.running.broker.store
    token = await world.running.token("web1", ["app.example.test"])
    status, kept = await api.call(
        "POST", "/v1/certificates", token,
        json={"csr": make_csr("app.example.test"), "renew": True, "wait": True, "timeout": 60},
    )  # fmt: skip
    assert (status, kept["state"]) == (200, "valid")
    await store.revoke_token("web1", time.time())
    now = time.time()
    await store.finish_order(
        kept["id"], OrderState.VALID, now,
        fullchain_pem=kept["fullchain_pem"], validity=(now - 200, now + 100),
    )  # fmt: skip
    failed = await _until_order(store, kept["id"], lambda o: o.renewal_error is not None)
    assert failed.renewals == 0
    assert failed.fullchain_pem == kept["fullchain_pem"]
    assert failed.claimed_until is not None
    assert failed.claimed_until > now + 3000
    admin = world.running.admin_token
    status, seen = await api.call(
        "GET", f"/v1/certificates/{kept['id']}", admin, template="/v1/certificates/{id}"
    )
    assert status == 200
    assert seen["renewal_error"]["type"] == "urn:dns01-broker:problem:owner-not-valid"
    assert "web1" in seen["renewal_error"]["detail"]
