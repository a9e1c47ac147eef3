"""A local OIDC issuer on loopback: its own RSA and EC key pairs, a discovery document and
a JWKS served by aiohttp, ID tokens shaped like GitHub Actions' and GitLab CI's, and key
rotation while a test runs. It counts JWKS fetches so tests can see refetches."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "https://broker.example.test"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        data["alg"] = "RS256"
    else:
        data = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        data["alg"] = "ES256"
    return {**data, "kid": kid, "use": "sig"}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with ``alg: none`` (and no signature), as an attacker would send it."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


class LocalIssuer:
    """``start()`` on 127.0.0.1:0; ``url`` is the issuer (``iss``)."""

    def __init__(self) -> None:
        self.keys: dict[str, PrivateKey] = {"rsa-1": new_rsa(), "ec-1": new_ec()}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> LocalIssuer:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, _: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/jwks",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response(self.jwks())

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(kid, key) for kid, key in self.keys.items()]}

    def rotate(self) -> str:
        """Replace the RSA key with a new one (new kid); return the new kid."""
        old = next(kid for kid, key in self.keys.items() if isinstance(key, rsa.RSAPrivateKey))
        number = int(old.rsplit("-", 1)[1]) + 1
        del self.keys[old]
        kid = f"rsa-{number}"
        self.keys[kid] = new_rsa()
        return kid

    def claims(self, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.url,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
        }
        return {**base, **extra}

    def github(
        self, repository: str = "org/web", ref: str = "refs/heads/main", **extra: Any
    ) -> dict[str, Any]:
        """Claims shaped like a GitHub Actions job's ID token."""
        return self.claims(
            sub=f"repo:{repository}:ref:{ref}",
            repository=repository,
            repository_owner=repository.split("/", maxsplit=1)[0],
            ref=ref,
            ref_type="branch",
            workflow="deploy",
            event_name="push",
            job_workflow_ref=f"{repository}/.github/workflows/deploy.yml@{ref}",
            environment="production",
            **extra,
        )

    def gitlab(
        self, project_path: str = "group/api", ref: str = "main", **extra: Any
    ) -> dict[str, Any]:
        """Claims shaped like a GitLab CI job's ID token (``id_tokens:``)."""
        return self.claims(
            sub=f"project_path:{project_path}:ref_type:branch:ref:{ref}",
            project_path=project_path,
            namespace_path=project_path.split("/", maxsplit=1)[0],
            ref=ref,
            ref_type="branch",
            ref_protected="true",
            pipeline_source="push",
            user_login="dev",
            **extra,
        )

    def sign(
        self, claims: dict[str, Any], kid: str = "rsa-1", *, headers: dict[str, Any] | None = None
    ) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid, **(headers or {})})

    def config(self, name: str, rules: str, *, extra: str = "") -> str:
        """An ``[[oidc.issuers]]`` TOML block trusting this issuer."""
        return f"""
[[oidc.issuers]]
name = "{name}"
issuer = "{self.url}"
audience = "{AUDIENCE}"
{extra}
{rules}
"""
