"""JSON Web Signatures for ACME (RFC 8555 6.2, RFC 7515): account keys, their JWK and
RFC 7638 thumbprint, the flattened JWS of every POST, and External Account Binding."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from broker.acme.errors import KeyFormatError
from broker.acme.keys import (
    KeyType,
    PrivateKey,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
)

JsonObject = dict[str, Any]

_EC_ALGORITHMS: dict[str, tuple[str, hashes.HashAlgorithm, int]] = {
    "secp256r1": ("ES256", hashes.SHA256(), 32),
    "secp384r1": ("ES384", hashes.SHA384(), 48),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (also tolerates standard base64)."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def public_jwk(key: PrivateKey) -> JsonObject:
    """The public JWK with only the members RFC 7638 hashes."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        curve = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        size = _EC_ALGORITHMS[key.curve.name][2]
        return {"crv": curve, "kty": "EC", "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    public = key.public_key().public_numbers()
    return {"e": _uint(public.e), "kty": "RSA", "n": _uint(public.n)}


def jwk_thumbprint(jwk: JsonObject) -> str:
    """RFC 7638: base64url(SHA-256(the required members, sorted, no whitespace))."""
    return b64url(hashlib.sha256(canonical_json(jwk)).digest())


@dataclass(frozen=True, slots=True)
class AccountKey:
    """An ACME account key: ES256 (P-256, the default), ES384 (P-384) or RS256 (RSA)."""

    private_key: PrivateKey

    def __post_init__(self) -> None:
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name not in _EC_ALGORITHMS:
                raise KeyFormatError(f"unsupported account key curve {key.curve.name}")
        elif not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise KeyFormatError("account keys are ECDSA P-256/P-384 or RSA of 2048+ bits")

    @property
    def algorithm(self) -> str:
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return _EC_ALGORITHMS[self.private_key.curve.name][0]
        return "RS256"

    @property
    def jwk(self) -> JsonObject:
        return public_jwk(self.private_key)

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(self.jwk)

    def sign(self, data: bytes) -> bytes:
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            _, digest, size = _EC_ALGORITHMS[key.curve.name]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint}"

    def to_pem(self, passphrase: bytes | str | None = None) -> bytes:
        return private_key_to_pem(self.private_key, passphrase)

    @classmethod
    def from_pem(cls, pem: bytes, passphrase: bytes | str | None = None) -> AccountKey:
        return cls(load_private_key(pem, passphrase))


def generate_account_key(kind: KeyType | str = KeyType.EC256) -> AccountKey:
    return AccountKey(generate_private_key(KeyType(kind)))


def dns01_txt_value(key_authorization: str) -> str:
    """The TXT value of a dns-01 challenge: base64url(SHA-256(key authorization))."""
    return b64url(hashlib.sha256(key_authorization.encode()).digest())


def sign_jws(
    key: AccountKey,
    payload: JsonObject | None,
    *,
    url: str,
    nonce: str,
    kid: str | None = None,
) -> JsonObject:
    """The flattened JWS of an ACME POST; ``payload=None`` is POST-as-GET (empty payload).

    With ``kid`` (the account URL) the header names the account; without it carries the
    JWK (newAccount, revocation by certificate key).
    """
    protected: JsonObject = {"alg": key.algorithm, "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = key.jwk
    else:
        protected["kid"] = kid
    encoded_payload = "" if payload is None else b64url(json.dumps(payload).encode())
    encoded_protected = b64url(json.dumps(protected).encode())
    signature = key.sign(f"{encoded_protected}.{encoded_payload}".encode())
    return {
        "protected": encoded_protected,
        "payload": encoded_payload,
        "signature": b64url(signature),
    }


def key_change_jws(
    new_key: AccountKey, old_key: AccountKey, *, url: str, account: str
) -> JsonObject:
    """The inner JWS of a key rollover (RFC 8555 7.3.5): signed by the new key, its JWK
    in the header, no nonce; the payload names the account and its old key."""
    protected = b64url(
        json.dumps({"alg": new_key.algorithm, "jwk": new_key.jwk, "url": url}).encode()
    )
    payload = b64url(json.dumps({"account": account, "oldKey": old_key.jwk}).encode())
    signature = new_key.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": b64url(signature)}


@dataclass(frozen=True, slots=True)
class ExternalAccountBinding:
    """An EAB credential from the CA: a key id and a base64url HMAC key (RFC 8555 7.3.4)."""

    kid: str
    hmac_key: str

    def __post_init__(self) -> None:
        if not self.kid or not self.hmac_key:
            raise KeyFormatError("external account binding needs a key id and an HMAC key")
        try:
            b64url_decode(self.hmac_key)
        except ValueError:
            raise KeyFormatError("the EAB HMAC key must be base64url") from None

    def __repr__(self) -> str:
        return f"ExternalAccountBinding(kid={self.kid!r}, hmac_key=<set>)"

    def sign(self, account_jwk: JsonObject, url: str) -> JsonObject:
        """The inner JWS of ``externalAccountBinding``: HS256 over the account JWK."""
        protected = b64url(json.dumps({"alg": "HS256", "kid": self.kid, "url": url}).encode())
        payload = b64url(json.dumps(account_jwk).encode())
        mac = hmac.new(
            b64url_decode(self.hmac_key), f"{protected}.{payload}".encode(), hashlib.sha256
        )
        return {"protected": protected, "payload": payload, "signature": b64url(mac.digest())}
