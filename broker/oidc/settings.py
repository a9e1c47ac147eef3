"""The ``[oidc]`` section: which OIDC issuers' ID tokens the broker trusts, and the rules
that map a token's claims to scopes. Rules are data (claim -> exact value or glob), never
code; everything is checked when the configuration loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from broker.dnsname import Scope
from broker.errors import BrokerError
from broker.values import Duration

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Asymmetric signatures only: ``none`` and HMAC (``HS*``) are refused, also in the config,
so an issuer's public key can never serve as an HMAC secret."""
ISSUER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
CLAIM_NAME = re.compile(r"[A-Za-z0-9_:.\-/]{1,100}")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OidcRule(_Section):
    """``claims`` (every one must match: a claim equals the text, or matches it as a glob
    where ``*`` stands for any run of characters) grant the scopes in ``allow``."""

    claims: dict[str, str] = Field(min_length=1)
    allow: Annotated[list[str], BeforeValidator(_listed)] = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, str]) -> dict[str, str]:
        for name, wanted in value.items():
            if not CLAIM_NAME.fullmatch(name):
                raise ValueError(f"claim name {name!r}: use the claim's name as it is in the token")
            if not wanted:
                raise ValueError(f"claim {name!r}: give a value or a glob such as 'org/*'")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        problems = []
        for pattern in value:
            try:
                Scope.parse(pattern)
            except BrokerError as exc:
                problems.append(exc.detail)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class OidcIssuer(_Section):
    name: str = Field(description="short name, part of principal and token names")
    issuer: str = Field(description="the iss claim, exactly; discovery is found below it")
    audience: Annotated[list[str], BeforeValidator(_listed)] = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    jwks_file: Path | None = Field(
        None, description="a JWKS file instead of discovery (air-gapped setups)"
    )
    rules: list[OidcRule] = Field(
        min_length=1, description="claims -> scopes; the first rule that matches applies"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ISSUER_NAME.fullmatch(value):
            raise ValueError("name: 1-20 characters of a-z, 0-9 and '-', such as 'github'")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
        if not secure or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                "issuer must be the issuer's https:// URL, exactly as its tokens' iss claim "
                "(e.g. https://token.actions.githubusercontent.com); http only on loopback"
            )
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in ALGORITHMS]
        if refused:
            raise ValueError(
                f"algorithms {', '.join(map(repr, refused))} refused: only signatures with the "
                f"issuer's public keys are accepted ({', '.join(ALGORITHMS)}); never 'none' "
                "or HMAC (HS256...)"
            )
        return value

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class OidcSettings(_Section):
    """OIDC workload identity: CI jobs authenticate with their ID tokens (JWTs)."""

    issuers: list[OidcIssuer] = Field(default_factory=list)
    clock_skew: Duration = Field(60.0, le=600, description="leeway on exp, nbf and iat")
    exchange_lifetime: Duration = Field(
        900.0, le=86400, description="lifetime of a token from POST /v1/tokens/exchange"
    )
    jwks_max_age: Duration = Field(3600.0, description="a fetched JWKS is fetched again after")
    jwks_refetch_interval: Duration = Field(
        30.0, description="at most one fetch per issuer this often for an unknown key id"
    )
    fetch_timeout: Duration = Field(10.0, le=120)

    @model_validator(mode="after")
    def _unique(self) -> OidcSettings:
        names = [issuer.name for issuer in self.issuers]
        urls = [issuer.issuer for issuer in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("issuers: each [[oidc.issuers]] needs a name of its own")
        if len(set(urls)) != len(urls):
            raise ValueError("issuers: each issuer URL may be listed once")
        return self
