"""Account keys, JWS, thumbprints, EAB, key PEM handling and account files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.acme import (
    AccountKey,
    AccountRecord,
    ExternalAccountBinding,
    KeyFormatError,
    KeyType,
    decrypt_private_key_pem,
    dns01_txt_value,
    dump_account,
    encrypt_private_key_pem,
    generate_account_key,
    generate_private_key,
    jwk_thumbprint,
    load_account,
    load_private_key,
    private_key_to_pem,
)
from broker.acme.jws import b64url, b64url_decode, sign_jws


def decode(part: str) -> dict[str, object]:
    return json.loads(b64url_decode(part))


def test_rfc_7638_thumbprint_example():
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR"
        "0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_es256_jws_verifies_and_names_the_account_by_kid():
    key = generate_account_key()
    jws = sign_jws(key, {"a": 1}, url="https://ca/x", nonce="n1", kid="https://ca/acct/1")
    header = decode(jws["protected"])
    assert header == {
        "alg": "ES256",
        "nonce": "n1",
        "url": "https://ca/x",
        "kid": "https://ca/acct/1",
    }
    assert decode(jws["payload"]) == {"a": 1}
    raw = b64url_decode(jws["signature"])
    assert len(raw) == 64
    signature = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    public = key.private_key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        signature, f"{jws['protected']}.{jws['payload']}".encode(), ec.ECDSA(hashes.SHA256())
    )


def test_rs256_jws_carries_the_jwk_and_post_as_get_has_an_empty_payload():
    key = generate_account_key(KeyType.RSA2048)
    jws = sign_jws(key, None, url="https://ca/order/1", nonce="n2")
    header = decode(jws["protected"])
    assert header["alg"] == "RS256"
    assert header["jwk"] == key.jwk
    assert set(key.jwk) == {"kty", "n", "e"}
    assert jws["payload"] == ""
    public = key.private_key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        b64url_decode(jws["signature"]),
        f"{jws['protected']}.".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_ec_jwk_coordinates_are_padded_to_the_curve_size():
    for kind, size, curve in ((KeyType.EC256, 32, "P-256"), (KeyType.EC384, 48, "P-384")):
        jwk = generate_account_key(kind).jwk
        assert jwk["crv"] == curve
        assert len(b64url_decode(jwk["x"])) == len(b64url_decode(jwk["y"])) == size


def test_key_authorization_and_dns01_value():
    key = generate_account_key()
    authorization = key.key_authorization("tok")
    assert authorization == f"tok.{key.thumbprint}"
    digest = hashlib.sha256(authorization.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert dns01_txt_value(authorization) == expected
    assert len(expected) == 43


def test_external_account_binding_is_hs256_over_the_account_jwk():
    secret = b"\x01" * 32
    binding = ExternalAccountBinding("kid-1", b64url(secret))
    jwk = generate_account_key().jwk
    signed = binding.sign(jwk, "https://ca/new-acct")
    assert decode(signed["protected"]) == {
        "alg": "HS256",
        "kid": "kid-1",
        "url": "https://ca/new-acct",
    }
    assert decode(signed["payload"]) == jwk
    mac = hmac.new(secret, f"{signed['protected']}.{signed['payload']}".encode(), hashlib.sha256)
    assert b64url_decode(signed["signature"]) == mac.digest()
    assert "hmac_key=<set>" in repr(binding)
    assert b64url(secret) not in repr(binding)


def test_external_account_binding_rejects_an_unusable_key():
    with pytest.raises(KeyFormatError):
        ExternalAccountBinding("kid-1", "")
    with pytest.raises(KeyFormatError):
        ExternalAccountBinding("kid-1", "not base64 at all!")


def test_account_keys_must_be_ecdsa_p256_p384_or_rsa_2048_plus():
    with pytest.raises(KeyFormatError):
        AccountKey(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(KeyFormatError):
        AccountKey(rsa.generate_private_key(65537, 1024))


def test_private_keys_round_trip_encrypted_and_a_wrong_passphrase_is_refused():
    key = generate_private_key(KeyType.EC256)
    plain = private_key_to_pem(key)
    assert plain.startswith(b"-----BEGIN PRIVATE KEY-----")
    locked = encrypt_private_key_pem(plain, "s3cret")
    assert locked.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(KeyFormatError):
        load_private_key(locked)
    with pytest.raises(KeyFormatError):
        load_private_key(locked, "wrong")
    assert decrypt_private_key_pem(locked, b"s3cret") == plain
    with pytest.raises(KeyFormatError):
        private_key_to_pem(key, "")


def test_traditional_pem_formats_load_and_other_key_types_do_not():
    rsa_key = rsa.generate_private_key(65537, 2048)
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert AccountKey.from_pem(pkcs1).algorithm == "RS256"
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match="unsupported key type"):
        load_private_key(other)
    with pytest.raises(KeyFormatError):
        load_private_key(b"garbage")


def test_account_files_round_trip_with_an_encrypted_key():
    record = AccountRecord("https://ca/dir", "https://ca/acct/7", generate_account_key())
    data = dump_account(record, passphrase="pw")
    assert b"ENCRYPTED PRIVATE KEY" in data
    loaded = load_account(data, passphrase="pw")
    assert (loaded.directory_url, loaded.account_url) == (record.directory_url, record.account_url)
    assert loaded.key.jwk == record.key.jwk
    with pytest.raises(KeyFormatError):
        load_account(data)
    with pytest.raises(KeyFormatError):
        load_account(b'{"format": "something else"}')
    with pytest.raises(KeyFormatError):
        load_account(b"not json")
