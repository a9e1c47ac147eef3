"""Secrets the broker must be able to read back, as it keeps them in the store.

A token is kept only as a digest, but a TSIG key cannot be: HMAC needs the shared secret
on both sides. Such a secret is sealed with AES-256-GCM under a key derived from
``auth.secret_key`` (kept outside the database: an ``env:`` or ``file:`` reference), bound
to the row it belongs to; without that setting it is kept as it is (``plain:``), and the
broker says so when it stores one.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED = "aesgcm:"
PLAIN = "plain:"
NONCE_SIZE = 12


class SecretUnreadableError(Exception):
    """A kept secret cannot be read back: the key is missing or not the one that sealed it."""


class SecretBox:
    def __init__(self, key: str | None) -> None:
        self._aead = None if key is None else AESGCM(_derive(key.encode()))

    @property
    def seals(self) -> bool:
        return self._aead is not None

    def seal(self, secret: bytes, bound_to: str) -> str:
        if self._aead is None:
            return PLAIN + base64.b64encode(secret).decode()
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, secret, bound_to.encode())
        return SEALED + base64.b64encode(nonce + sealed).decode()

    def open(self, kept: str, bound_to: str) -> bytes:
        try:
            if kept.startswith(PLAIN):
                return base64.b64decode(kept[len(PLAIN) :], validate=True)
            if not kept.startswith(SEALED):
                raise SecretUnreadableError("the kept secret has an unknown form")
            if self._aead is None:
                raise SecretUnreadableError("it was sealed with auth.secret_key, which is not set")
            raw = base64.b64decode(kept[len(SEALED) :], validate=True)
            return self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], bound_to.encode())
        except (binascii.Error, ValueError) as exc:
            raise SecretUnreadableError(f"the kept secret is damaged: {exc}") from None
        except InvalidTag:
            raise SecretUnreadableError(
                "auth.secret_key is not the key it was sealed with"
            ) from None


def _derive(key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"dns01-broker secretbox"
    ).derive(key)
