"""ID token verification against a local issuer: every refusal has its reason (and is
audited without the token), the rules map claims to scopes (first match wins), and the
issuer's keys are fetched, rotated and fetched again once for an unknown kid."""

from __future__ import annotations

import asyncio
import hashlib
import hmac as hmac_module
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.utils import base64url_encode

from broker.audit import AuditLog
from broker.config import ConfigError
from broker.errors import IdentityProviderError, NoMatchingRuleError
from broker.oidc.settings import OidcSettings
from broker.oidc.verify import OidcRefusal, OidcVerifier
from broker.store import AuditQuery
from broker.store.sqlite import SqliteStore
from tests.fakes.oidc import AUDIENCE, LocalIssuer, public_pem, unsigned
from tests.support import write_settings

RULES: list[dict[str, Any]] = [
    {
        "claims": {"repository": "org/web", "ref": "refs/heads/main"},
        "allow": ["*.web.example.test"],
    },
    {"claims": {"repository": "org/web"}, "allow": ["staging.web.example.test"]},
    {
        "claims": {"repository": "org/*", "environment": "production"},
        "allow": ["*.org.example.test"],
    },
    {
        "claims": {"project_path": "group/api", "ref_protected": "true"},
        "allow": ["api.example.test"],
    },
]


def settings(local: LocalIssuer, **overrides: Any) -> OidcSettings:
    entry = {"name": "local", "issuer": local.url, "audience": AUDIENCE, "rules": RULES}
    entry.update(overrides.pop("issuer", {}))
    return OidcSettings.model_validate({"issuers": [entry], **overrides})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def refused(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(OidcRefusal) as caught:
        await verifier.verify(token)
    return caught.value.reason


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"repository": "org/web", "ref": "refs/heads/main"}, ["*.web.example.test"]),
        ({"repository": "org/web", "ref": "refs/heads/feature"}, ["staging.web.example.test"]),
        ({"repository": "org/other", "ref": "refs/heads/x", "environment": "production"},
         ["*.org.example.test"]),
        ({"repository": "other/web", "ref": "refs/heads/main", "environment": "production"}, None),
        ({"repository": "org/other", "environment": "staging"}, None),
        ({"project_path": "group/api", "ref_protected": "true"}, ["api.example.test"]),
        ({"project_path": "group/api", "ref_protected": "false"}, None),
        ({"project_path": "group/api", "ref_protected": True}, ["api.example.test"]),
        ({"repository": ["org/web"], "ref": "refs/heads/main"}, None),
        ({}, None),
    ],
)  # fmt: skip
async def test_rules_grant_the_scopes_of_the_first_match(
    local_issuer: LocalIssuer, claims: dict[str, Any], scopes: list[str] | None
):
    verifier = OidcVerifier(settings(local_issuer))
    try:
        token = local_issuer.sign(local_issuer.claims(sub="job", **claims))
        if scopes is None:
            with pytest.raises(NoMatchingRuleError):
                await verifier.verify(token)
        else:
            identity = await verifier.verify(token)
            assert list(identity.scopes) == scopes
            assert identity.name == "oidc:local:job"
    finally:
        await verifier.close()


async def test_github_and_gitlab_tokens_signed_with_rsa_and_ec_are_accepted(
    local_issuer: LocalIssuer,
):
    verifier = OidcVerifier(settings(local_issuer))
    try:
        github = await verifier.verify(local_issuer.sign(local_issuer.github(), "rsa-1"))
        assert github.scopes == ("*.web.example.test",)
        assert github.subject == "repo:org/web:ref:refs/heads/main"
        gitlab = await verifier.verify(local_issuer.sign(local_issuer.gitlab(), "ec-1"))
        assert gitlab.scopes == ("api.example.test",)
        assert local_issuer.discovery_fetches == 1
        assert local_issuer.jwks_fetches == 1
    finally:
        await verifier.close()


async def test_invalid_tokens_are_refused_with_their_reason(local_issuer: LocalIssuer):
    verifier = OidcVerifier(settings(local_issuer))
    now = int(time.time())
    try:
        sign, claims = local_issuer.sign, local_issuer.github
        assert (
            await refused(verifier, sign(claims(aud="https://other.example"))) == "wrong-audience"
        )
        assert await refused(verifier, sign(claims(exp=now - 120))) == "expired"
        assert await refused(verifier, sign(claims(nbf=now + 600))) == "not-yet-valid"
        assert await refused(verifier, sign(claims(iat=now + 600))) == "not-yet-valid"
        assert await refused(verifier, sign(claims(iss="https://evil.example"))) == "unknown-issuer"
        no_exp = claims()
        del no_exp["exp"]
        assert await refused(verifier, sign(no_exp)) == "missing-claim"
        assert await refused(verifier, "eyJhbGc.e30.AAAA") == "malformed"
        assert await refused(verifier, "eyJhbGciOiJSUzI1NiJ9.e30.AAAA") == "unknown-issuer"
        # within the clock skew (60 s): still valid
        await verifier.verify(sign(claims(exp=now - 30)))
        await verifier.verify(sign(claims(nbf=now + 30, iat=now + 30)))
    finally:
        await verifier.close()


async def test_a_token_signed_by_another_key_for_this_issuer_is_refused(
    local_issuer: LocalIssuer,
):
    other = await LocalIssuer().start()
    verifier = OidcVerifier(settings(local_issuer))
    try:
        forged = other.sign(local_issuer.github(), "rsa-1")  # same kid, another key
        assert await refused(verifier, forged) == "bad-signature"
    finally:
        await verifier.close()
        await other.stop()


async def test_alg_none_is_refused(local_issuer: LocalIssuer):
    verifier = OidcVerifier(settings(local_issuer))
    try:
        token = unsigned(local_issuer.github(), {"alg": "none", "typ": "JWT", "kid": "rsa-1"})
        assert await refused(verifier, token) == "algorithm-refused"
        assert local_issuer.jwks_fetches == 0  # refused before any key is looked up
    finally:
        await verifier.close()


async def test_hmac_signed_with_the_issuers_public_key_is_refused(local_issuer: LocalIssuer):
    """The classic key confusion: HS256 with the RSA public key's PEM as the secret."""
    verifier = OidcVerifier(settings(local_issuer, issuer={"algorithms": ["RS256"]}))
    try:
        pem = public_pem(local_issuer.keys["rsa-1"])
        header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
        token = unsigned(local_issuer.github(), header)[:-1]
        signature = hmac_module.new(pem, token.encode(), hashlib.sha256).digest()
        forged = f"{token}.{base64url_encode(signature).decode()}"
        assert await refused(verifier, forged) == "algorithm-refused"
        # and even with the key in hand, PyJWT never verifies HMAC with the issuer's key
        key = (await verifier.keys[local_issuer.url].key("rsa-1")).key  # type: ignore[union-attr]
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(forged, key, algorithms=["RS256"], audience=AUDIENCE)
    finally:
        await verifier.close()


async def test_rotation_fetches_the_keys_again_once_for_an_unknown_kid_rate_limited(
    local_issuer: LocalIssuer,
):
    clock = Clock()
    verifier = OidcVerifier(settings(local_issuer), monotonic=clock)
    try:
        await verifier.verify(local_issuer.sign(local_issuer.github()))
        assert local_issuer.jwks_fetches == 1
        new_kid = local_issuer.rotate()
        clock.now += 5
        # the new key: one refetch, then accepted
        await verifier.verify(local_issuer.sign(local_issuer.github(), new_kid))
        assert local_issuer.jwks_fetches == 2
        # a made-up kid soon after: no fetch (at most one per 30 s per issuer)
        for _ in range(5):
            bogus = local_issuer.sign(local_issuer.github(), new_kid, headers={"kid": "nope"})
            assert await refused(verifier, bogus) == "unknown-key"
        assert local_issuer.jwks_fetches == 2
        # another rotation within the 30 s: the new kid is refused until the interval passes
        newer = local_issuer.rotate()
        token = local_issuer.sign(local_issuer.github(), newer)
        assert await refused(verifier, token) == "unknown-key"
        assert local_issuer.jwks_fetches == 2
        clock.now += 31
        await verifier.verify(token)
        assert local_issuer.jwks_fetches == 3
        # the old key is gone from the issuer, and so from the broker
        old = local_issuer.sign(local_issuer.github(), newer, headers={"kid": "rsa-1"})
        clock.now += 31
        assert await refused(verifier, old) == "unknown-key"
    finally:
        await verifier.close()


async def test_keys_are_fetched_again_after_their_max_age(local_issuer: LocalIssuer):
    clock = Clock()
    verifier = OidcVerifier(settings(local_issuer, jwks_max_age="10m"), monotonic=clock)
    try:
        token = local_issuer.sign(local_issuer.github())
        await verifier.verify(token)
        clock.now += 599
        await verifier.verify(token)
        assert local_issuer.jwks_fetches == 1
        clock.now += 2
        await verifier.verify(token)
        assert local_issuer.jwks_fetches == 2
    finally:
        await verifier.close()


async def test_an_unreachable_issuer_is_503_and_keys_already_fetched_stay(
    local_issuer: LocalIssuer,
):
    clock = Clock()
    verifier = OidcVerifier(settings(local_issuer, jwks_max_age="10m"), monotonic=clock)
    token = local_issuer.sign(local_issuer.github())
    try:
        await verifier.verify(token)
        await local_issuer.stop()
        clock.now += 601
        await verifier.verify(token)  # the fetch fails, the keys it had are kept
    finally:
        await verifier.close()
    fresh = OidcVerifier(settings(local_issuer))
    try:
        with pytest.raises(IdentityProviderError):
            await fresh.verify(token)
    finally:
        await fresh.close()


async def test_a_jwks_file_serves_air_gapped_setups(local_issuer: LocalIssuer, tmp_path: Path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(local_issuer.jwks()))
    verifier = OidcVerifier(settings(local_issuer, issuer={"jwks_file": str(jwks)}))
    try:
        await verifier.verify(local_issuer.sign(local_issuer.gitlab(), "ec-1"))
        assert local_issuer.jwks_fetches == 0
    finally:
        await verifier.close()


async def test_every_decision_is_audited_with_claims_and_never_the_token(
    local_issuer: LocalIssuer, tmp_path: Path
):
    store = SqliteStore(tmp_path / "broker.db")
    await store.open()
    audit_log = AuditLog(store)
    verifier = OidcVerifier(settings(local_issuer), audit_log)
    try:
        good = local_issuer.sign(local_issuer.github())
        await verifier.verify(good, source="192.0.2.7")
        late = local_issuer.sign(local_issuer.github(exp=int(time.time()) - 600))
        with pytest.raises(OidcRefusal):
            await verifier.verify(late, source="192.0.2.7")
        with pytest.raises(NoMatchingRuleError):
            await verifier.verify(local_issuer.sign(local_issuer.github(repository="x/y")))
        await audit_log.drain()
        events = await store.audit_events(AuditQuery(action="oidc.verify"))
        assert [e.result for e in events] == ["no-matching-rule", "expired", "ok"]
        ok = events[-1]
        assert ok.actor == "oidc:local:repo:org/web:ref:refs/heads/main"
        assert ok.source == "192.0.2.7"
        assert "iss=local" in ok.target
        assert "repository=org/web" in ok.target
        assert "ref=refs/heads/main" in ok.target
        for e in events:
            assert good not in str(e)
            assert late.split(".")[2] not in str(e)
    finally:
        await verifier.close()
        await audit_log.close()
        await store.close()


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ('algorithms = ["none"]', "never 'none' or HMAC"),
        ('algorithms = ["HS256"]', "never 'none' or HMAC"),
        ('algorithms = ["RS256", "HS512"]', "'HS512'"),
        ('issuer = "ftp://x"', "https://"),
        ('issuer = "http://ci.example.com"', "http only on loopback"),
        ('name = "Bad Name"', "a-z, 0-9"),
        ("rules = []", "at least 1"),
        ('rules = [{ claims = {}, allow = ["a.example.test"] }]', "at least 1"),
        ('rules = [{ claims = { repository = "org/web" }, allow = ["a..b"] }]', "a..b"),
        ('rules = [{ claims = { repository = "" }, allow = ["a.example.test"] }]', "a glob"),
        ('rules = [{ claims = { repository = "x" }, allow = ["a.example.test"], run = "x" }]',
         "unknown setting"),
        ('jwks_file = "/nonexistent/jwks.json"', "cannot read"),
    ],
)  # fmt: skip
def test_bad_issuer_config_is_refused_at_start_with_a_clear_error(
    tmp_path: Path, block: str, problem: str
):
    entry = {
        "name": '"gh"',
        "issuer": '"https://token.actions.githubusercontent.com"',
        "audience": '"https://broker.example.test"',
        "rules": '[{ claims = { repository = "org/web" }, allow = ["*.web.example.test"] }]',
    }
    key, _, value = block.partition(" = ")
    entry[key] = value
    toml = "[[oidc.issuers]]\n" + "\n".join(f"{k} = {v}" for k, v in entry.items())
    with pytest.raises(ConfigError) as caught:
        write_settings(tmp_path, toml)
    assert problem in str(caught.value)
    assert "oidc.issuers.0" in str(caught.value)


def test_a_good_issuer_config_loads(tmp_path: Path):
    toml = """
[oidc]
clock_skew = "30s"
exchange_lifetime = "10m"
[[oidc.issuers]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
audience = "https://broker.example.test"
algorithms = ["RS256"]
[[oidc.issuers.rules]]
claims = { repository = "org/web", ref = "refs/heads/main" }
allow = ["*.web.example.test", "web.example.test"]
[[oidc.issuers.rules]]
claims = { repository_owner = "org" }
allow = "staging.example.test"
"""
    oidc = write_settings(tmp_path, toml).oidc
    assert oidc.clock_skew == 30
    assert oidc.exchange_lifetime == 600
    assert [rule.allow for rule in oidc.issuers[0].rules] == [
        ["*.web.example.test", "web.example.test"],
        ["staging.example.test"],
    ]


async def test_concurrent_tokens_of_a_new_key_share_one_refetch(local_issuer: LocalIssuer):
    verifier = OidcVerifier(settings(local_issuer))
    try:
        await verifier.verify(local_issuer.sign(local_issuer.github()))
        kid = local_issuer.rotate()
        tokens = [local_issuer.sign(local_issuer.github(), kid) for _ in range(5)]
        identities = await asyncio.gather(*(verifier.verify(token) for token in tokens))
        assert len(identities) == 5
        assert local_issuer.jwks_fetches == 2
    finally:
        await verifier.close()
