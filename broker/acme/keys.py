"""Private keys: the supported kinds, generation, and PEM in and out (optionally
encrypted with a passphrase, for keys kept at rest)."""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.acme.errors import KeyFormatError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class KeyType(StrEnum):
    """Key kinds by the names lego uses: ``ec256`` (the default), ``rsa2048``..."""

    EC256 = "ec256"
    EC384 = "ec384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"


_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.EC256: ec.SECP256R1(),
    KeyType.EC384: ec.SECP384R1(),
}
_RSA_BITS = {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072, KeyType.RSA4096: 4096}


def generate_private_key(kind: KeyType | str = KeyType.EC256) -> PrivateKey:
    kind = KeyType(kind)
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind])
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kind])


def key_type_of(key: PrivateKey) -> KeyType:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for kind, curve in _CURVES.items():
            if curve.name == key.curve.name:
                return kind
    elif key.key_size in _RSA_BITS.values():
        return next(kind for kind, bits in _RSA_BITS.items() if bits == key.key_size)
    raise KeyFormatError(f"unsupported key ({type(key).__name__}); use one of {_kinds()}")


def _kinds() -> str:
    return ", ".join(kind.value for kind in KeyType)


def _passphrase_bytes(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None:
        return None
    data = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if not data:
        raise KeyFormatError("an empty passphrase encrypts nothing; give one or none")
    return data


def private_key_to_pem(key: PrivateKey, passphrase: bytes | str | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available cipher when a passphrase is given."""
    secret = _passphrase_bytes(passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if secret is None
        else serialization.BestAvailableEncryption(secret)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(pem: bytes | str, passphrase: bytes | str | None = None) -> PrivateKey:
    """Read a PEM private key (PKCS#8, SEC1 or PKCS#1; encrypted if ``passphrase``)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase_bytes(passphrase))
    except (TypeError, ValueError) as exc:
        raise KeyFormatError(f"cannot read the private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyFormatError(f"unsupported key type {type(key).__name__}; use ECDSA or RSA")
    return key


def encrypt_private_key_pem(pem: bytes | str, passphrase: bytes | str) -> bytes:
    """The same key as encrypted PKCS#8 PEM (BestAvailableEncryption)."""
    return private_key_to_pem(load_private_key(pem), passphrase)


def decrypt_private_key_pem(pem: bytes | str, passphrase: bytes | str) -> bytes:
    """The same key as unencrypted PKCS#8 PEM; a wrong passphrase is a KeyFormatError."""
    return private_key_to_pem(load_private_key(pem, passphrase))
