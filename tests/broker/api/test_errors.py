"""Bad input: a clear problem document with a stable code, never a 500, nothing changed."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.acme.csr import make_csr
from tests.support import Api, Running

GOOD = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

# (raw body, expected status, expected code)
MALFORMED = [
    (b"", 400, "malformed-json"),
    (b"{", 400, "malformed-json"),
    (b"\xff\xfe{}", 400, "malformed-json"),
    (b"[]", 400, "malformed-json"),
    (b'"text"', 400, "malformed-json"),
    (b"null", 400, "malformed-json"),
    (b"NaN", 400, "malformed-json"),
    (b'{"domain": "www.example.test", "value": "x", "lease": Infinity}', 400, "malformed-json"),
    (b"{}", 400, "invalid-request"),
    (json.dumps({"domain": "www.example.test"}), 400, "invalid-request"),
    (json.dumps({"domain": "www.example.test", "value": 42}), 400, "invalid-request"),
    (json.dumps({"domain": ["www.example.test"], "value": GOOD}), 400, "invalid-request"),
    (json.dumps({"domain": "www.example.test", "value": GOOD, "vaule": 1}), 400, "invalid-request"),
    (json.dumps({"value": GOOD}), 400, "invalid-request"),
    (
        json.dumps(
            {
                "domain": "www.example.test",
                "fqdn": "_acme-challenge.www.example.test",
                "value": GOOD,
            }
        ),
        400,
        "invalid-request",
    ),
    (
        json.dumps({"domain": "www.example.test", "value": GOOD, "lease": "60"}),
        400,
        "invalid-request",
    ),
    (
        json.dumps({"domain": "www.example.test", "value": GOOD, "lease": 1.5}),
        400,
        "invalid-request",
    ),
    (
        json.dumps({"domain": "www.example.test", "value": GOOD, "lease": True}),
        400,
        "invalid-request",
    ),
    (json.dumps({"domain": "www..example.test", "value": GOOD}), 400, "invalid-name"),
    (json.dumps({"domain": "", "value": GOOD}), 400, "invalid-name"),
    (json.dumps({"domain": "a" * 64 + ".example.test", "value": GOOD}), 400, "invalid-name"),
    (
        json.dumps({"domain": ("a" * 62 + ".") * 4 + "example.test", "value": GOOD}),
        400,
        "invalid-name",
    ),
    (json.dumps({"domain": "www.exa mple.test", "value": GOOD}), 400, "invalid-name"),
    (json.dumps({"domain": "a.*.example.test", "value": GOOD}), 400, "invalid-name"),
    (json.dumps({"fqdn": "www.example.test.", "value": GOOD}), 400, "invalid-name"),
    (json.dumps({"domain": "www.example.test", "value": ""}), 400, "invalid-value"),
    (json.dumps({"domain": "www.example.test", "value": "x" * 256}), 400, "invalid-value"),
    (json.dumps({"domain": "www.example.test", "value": "two words"}), 400, "invalid-value"),
    (json.dumps({"domain": "www.example.test", "value": 'q"uote'}), 400, "invalid-value"),
    (json.dumps({"domain": "www.example.test", "value": "ünïcode"}), 400, "invalid-value"),
    (json.dumps({"domain": "www.example.test", "value": GOOD, "lease": 0}), 400, "invalid-lease"),
    (
        json.dumps({"domain": "www.example.test", "value": GOOD, "lease": 10**9}),
        400,
        "invalid-lease",
    ),
    (json.dumps({"domain": "www.other.test", "value": GOOD}), 422, "no-zone"),
]


@pytest.mark.parametrize(("raw", "status", "code"), MALFORMED)
@pytest.mark.parametrize("path", ["/v1/present", "/v1/cleanup"])
async def test_malformed_requests_get_a_problem_and_change_nothing(
    api: Api, running: Running, path, raw, status, code
):
    admin = running.admin_token
    await api.call("POST", "/v1/present", admin, json={"domain": "www.example.test", "value": GOOD})
    got, body = await api.call("POST", path, admin, data=raw)
    if path == "/v1/cleanup" and code == "invalid-lease":
        # cleanup ignores the lease, so this is a valid cleanup of the value
        assert (got, body["removed"]) == (200, True)
        return
    assert got == status, body
    assert body["code"] == code
    assert body["type"] == f"urn:dns01-broker:problem:{code}"
    assert body["detail"]
    assert await running.txt("_acme-challenge.www.example.test") == ("NOERROR", [GOOD])


async def test_schema_errors_point_at_the_offending_fields(api: Api, running: Running):
    status, body = await api.call(
        "POST", "/v1/present", running.admin_token, json={"domain": 5, "lease": "x", "extra": 1}
    )
    assert status == 400
    pointers = {error["pointer"] for error in body["errors"]}
    assert pointers == {"/domain", "/lease", "/extra", "/value"}


async def test_body_over_the_limit_is_413(api: Api, running: Running):
    big = json.dumps({"domain": "www.example.test", "value": GOOD, "pad": "x" * 70000})
    status, body = await api.call("POST", "/v1/present", running.admin_token, data=big)
    assert (status, body["code"]) == (413, "body-too-large")
    assert await running.txt("_acme-challenge.www.example.test") == ("NXDOMAIN", [])


async def test_unknown_route_and_wrong_method_are_problems(running: Running):
    status, body, response = await running.call("GET", "/v1/nothing-here")
    assert (status, body["code"]) == (404, "not-found")
    assert response.content_type == "application/problem+json"
    status, body, _ = await running.call("GET", "/v1/present")
    assert (status, body["code"]) == (405, "method-not-allowed")
    assert "POST" in body["detail"]


@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "OPTIONS", "DELETE", "HEAD"])
async def test_every_route_answers_an_undeclared_method_with_405_and_allow(
    running: Running, openapi, method
):
    for template in sorted({path for _, path in openapi.paths()}):
        declared = {m for m, p in openapi.paths() if p == template}
        if method in declared:
            continue
        path = template.replace("{id}", "x").replace("{name}", "x").replace("{username}", "x")
        status, body, response = await running.call(method, path, running.admin_token)
        assert status == 405, (method, path, body)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == declared, (method, path)
        assert response.content_type == "application/problem+json"
        if method != "HEAD":
            assert body["code"] == "method-not-allowed"


async def test_unauthenticated_request_is_401_before_its_body_is_judged(api: Api):
    status, body = await api.call("POST", "/v1/present", data=b"{not json")
    assert (status, body["code"]) == (401, "unauthorized")


# 238 octets: one more than a name may have when `_acme-challenge.` goes in front.
TOO_LONG = ".".join(["a" * 61, "b" * 61, "c" * 61, "d" * 39]) + ".example.test"


def _csr(*names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return make_csr(key, names).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/present", {"domain": TOO_LONG, "value": GOOD}),
        ("POST", "/v1/present", {"domain": "*." + TOO_LONG, "value": GOOD}),
        ("POST", "/v1/cleanup", {"domain": TOO_LONG, "value": GOOD}),
        ("POST", "/v1/present", {"fqdn": f"_acme-challenge.{TOO_LONG}", "value": GOOD}),
        ("GET", f"/v1/propagation?domain={TOO_LONG}&value={GOOD}", None),
        ("POST", "/present", {"domain": TOO_LONG, "token": "t", "keyAuth": "t.k"}),
        ("POST", "/present", {"fqdn": f"_acme-challenge.{TOO_LONG}.", "value": GOOD}),
        ("POST", "/cleanup", {"fqdn": f"_acme-challenge.{TOO_LONG}.", "value": GOOD}),
        ("POST", "/v1/certificates", {"csr": _csr("www.example.test", TOO_LONG)}),
    ],
)
async def test_a_name_too_long_for_its_challenge_name_is_400_on_every_face(
    api: Api, running: Running, method, path, body
):
    """Once a 500 (dns.name.NameTooLong from the CNAME lookup); now refused before it."""
    assert len(TOO_LONG) == 238
    status, problem = await api.call(method, path, running.admin_token, json=body)
    assert (status, problem["code"]) == (400, "invalid-name"), problem
    assert "octets" in problem["detail"]
    assert await running.broker.store.live_challenges() == []


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/v1/challenges/a%00b", "/v1/challenges/{id}"),
        ("GET", "/v1/certificates/a%00b", "/v1/certificates/{id}"),
        ("DELETE", "/v1/tokens/a%00b", "/v1/tokens/{name}"),
        ("DELETE", "/v1/registrations/a%00b", "/v1/registrations/{username}"),
    ],
)
async def test_an_identifier_no_record_can_have_is_not_found_on_every_store(
    api: Api, running: Running, method, path, template
):
    """A NUL byte cannot be in any stored text (PostgreSQL refuses it outright): 404, not 503."""
    status, problem = await api.call(method, path, running.admin_token, template=template)
    assert (status, problem["code"]) == (404, "not-found")


async def test_a_csr_with_a_nul_byte_is_400_on_every_store(api: Api, running: Running):
    csr = _csr("www.example.test") + "\x00"
    status, problem = await api.call(
        "POST", "/v1/certificates", running.admin_token, json={"csr": csr}
    )
    assert (status, problem["code"]) == (400, "invalid-request")
