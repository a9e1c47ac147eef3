"""Verify OIDC ID tokens (JWTs) of trusted issuers and map their claims to scopes.

A token is checked in this order, and refused at the first failure: its shape, its
``iss`` (one of ``[[oidc.issuers]]``), its ``alg`` (one the issuer's config lists: never
``none`` nor HMAC), its key (by ``kid``, fetched again once when unknown), then by PyJWT
its signature, ``aud``, ``exp``, ``nbf`` and ``iat`` (with ``clock_skew`` of leeway),
and last the issuer's rules, in order: the first rule whose claims all match gives the
scopes. Every decision is written to the audit log (action ``oidc.verify``) with the
claims that identify the job; the token itself never is.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from broker import audit
from broker.audit import AuditLog
from broker.auth import OIDC_PREFIX, is_jwt
from broker.errors import BrokerError, NoMatchingRuleError, UnauthorizedError
from broker.oidc.keys import IssuerKeys, KeyFetchError
from broker.oidc.settings import OidcIssuer, OidcRule, OidcSettings

log = logging.getLogger(__name__)

EXCHANGED_PREFIX = "oidc-"
"""Names of the tokens ``POST /v1/tokens/exchange`` makes: ``oidc-<issuer>-<random>``."""
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat")
AUDITED_CLAIMS = (
    "sub", "repository", "ref", "environment", "job_workflow_ref", "project_path",
    "ref_type", "pipeline_source",
)  # fmt: skip
"""Claims named in the audit log beside those the issuer's rules test."""

_REASONS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "it has expired"),
    (jwt.ImmatureSignatureError, "not-yet-valid", "it is not valid yet (nbf or iat)"),
    (jwt.InvalidAudienceError, "wrong-audience", "its audience (aud) is not this broker's"),
    (jwt.InvalidIssuerError, "wrong-issuer", "its issuer (iss) does not match"),
    (jwt.MissingRequiredClaimError, "missing-claim", "it lacks a required claim"),
    (jwt.InvalidSignatureError, "bad-signature", "its signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm-refused", "its algorithm is not allowed"),
)


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """A verified ID token: its issuer's name, claims, the scopes its rule grants."""

    issuer: str
    claims: dict[str, Any]
    scopes: tuple[str, ...]
    rule: int
    """The index of the rule that matched, in the issuer's list."""

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def name(self) -> str:
        """The principal's name: ``oidc:<issuer name>:<sub>``."""
        return f"{OIDC_PREFIX}{self.issuer}:{self.subject}"

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])

    def replay_key(self, token: str) -> str:
        """What makes this token single-use at the exchange: its ``jti``, else its hash."""
        jti = self.claims.get("jti")
        if isinstance(jti, str) and jti:
            return f"jti:{jti}"
        return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class OidcRefusal(UnauthorizedError):
    """A token refused, with the short reason the audit log keeps."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"the OIDC ID token was refused: {detail}")
        self.reason = reason


def claim_text(value: object) -> str | None:
    """A claim as rules compare it: text, a number, or true/false; else unmatched."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def rule_matches(rule: OidcRule, claims: dict[str, Any]) -> bool:
    for name, wanted in rule.claims.items():
        text = claim_text(claims.get(name))
        if text is None:
            return False
        if "*" in wanted:
            if not _glob(wanted).fullmatch(text):
                return False
        elif text != wanted:
            return False
    return True


def first_match(issuer: OidcIssuer, claims: dict[str, Any]) -> int | None:
    return next((i for i, rule in enumerate(issuer.rules) if rule_matches(rule, claims)), None)


def describe_claims(issuer: OidcIssuer | None, claims: dict[str, Any]) -> str:
    """``iss=<name> sub=... repository=...``: who the token speaks for, for the audit log."""
    names = list(AUDITED_CLAIMS)
    for rule in issuer.rules if issuer is not None else ():
        names.extend(name for name in rule.claims if name not in names)
    parts = [f"iss={issuer.name if issuer is not None else claims.get('iss', '?')}"]
    for name in names:
        text = claim_text(claims.get(name))
        if text is not None:
            parts.append(f"{name}={text}")
    return " ".join(parts)


class OidcVerifier:
    """Verifies ID tokens of the configured issuers (``open`` / ``close`` its session)."""

    def __init__(
        self,
        settings: OidcSettings,
        audit_log: AuditLog | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._audit = audit_log
        self._session: aiohttp.ClientSession | None = None
        self.keys = {
            issuer.issuer: IssuerKeys(issuer, settings, self._client, monotonic)
            for issuer in settings.issuers
        }

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> list[tuple[OidcIssuer, str | None]]:
        """Fetch every issuer's keys now: (issuer, None) or (issuer, why not), for
        ``config check``."""
        outcomes: list[tuple[OidcIssuer, str | None]] = []
        for keys in self.keys.values():
            try:
                count = len(await keys.fetch())
            except KeyFetchError as exc:
                outcomes.append((keys.issuer, str(exc)))
            else:
                outcomes.append((keys.issuer, None if count else "no keys"))
        return outcomes

    async def verify(self, token: str, *, face: str = "api", source: object = None) -> OidcIdentity:
        """The identity of a valid token that a rule grants scopes; OidcRefusal (401),
        NoMatchingRuleError (403) or IdentityProviderError (503) otherwise. Audited."""
        issuer: OidcIssuer | None = None
        claims: dict[str, Any] = {}
        try:
            issuer, claims = await self._verified(token)
            rule = first_match(issuer, claims)
            if rule is None:
                raise NoMatchingRuleError(
                    f"no rule of OIDC issuer {issuer.name!r} matches this token "
                    f"({describe_claims(issuer, claims)}): add one to [[oidc.issuers.rules]]"
                )
        except BrokerError as exc:
            reason = exc.reason if isinstance(exc, OidcRefusal) else exc.code
            self._record(face, issuer, claims, reason, source)
            raise
        identity = OidcIdentity(issuer.name, claims, tuple(issuer.rules[rule].allow), rule)
        self._record(face, issuer, claims, audit.OK, source)
        return identity

    def refused(self, identity: OidcIdentity, reason: str, source: object) -> None:
        """Audit a verified token refused after all (replayed at the exchange)."""
        issuer = self.keys[identity.claims["iss"]].issuer
        self._record("api", issuer, identity.claims, reason, source)

    def _record(
        self,
        face: str,
        issuer: OidcIssuer | None,
        claims: dict[str, Any],
        result: str,
        source: object,
    ) -> None:
        sub = claim_text(claims.get("sub"))
        actor = None if issuer is None or sub is None else f"{OIDC_PREFIX}{issuer.name}:{sub}"
        if result != audit.OK:
            log.info("oidc token refused reason=%s %s", result, describe_claims(issuer, claims))
        if self._audit is not None:
            self._audit.record(
                face, audit.OIDC_VERIFY, describe_claims(issuer, claims) if claims else None,
                actor=actor, source=source, result=result,
            )  # fmt: skip

    async def _verified(self, token: str) -> tuple[OidcIssuer, dict[str, Any]]:
        if not is_jwt(token):
            raise OidcRefusal("malformed", "it is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise OidcRefusal("malformed", "it is not a JWT") from None
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        keys = self.keys.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise OidcRefusal("unknown-issuer", "its issuer (iss) is not trusted here")
        issuer = keys.issuer
        if header.get("alg") not in issuer.algorithms:
            raise OidcRefusal(
                "algorithm-refused",
                f"its algorithm {header.get('alg')!r} is not one of {', '.join(issuer.algorithms)}",
            )
        kid = header.get("kid")
        key = await keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise OidcRefusal("unknown-key", f"issuer {issuer.name!r} has no key {kid!r}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=issuer.algorithms,
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self.settings.clock_skew,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": False},
            )
        except jwt.PyJWTError as exc:
            reason, detail = next(
                ((r, d) for kind, r, d in _REASONS if isinstance(exc, kind)),
                ("invalid", "it is not valid"),
            )
            raise OidcRefusal(reason, detail) from None
        if claim_text(claims.get("sub")) is None:
            raise OidcRefusal("missing-claim", "its subject (sub) is not text")
        return issuer, claims
