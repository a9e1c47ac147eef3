"""TSIG keys of tokens (RFC 8945): the algorithms the broker signs and verifies with, and
new keys for tokens. A token's key is named after the token (``web1.``)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

import dns.exception
import dns.name
import dns.tsig

from broker.errors import InvalidRequestError

TsigAlgorithm = Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1"]
ALGORITHMS: tuple[TsigAlgorithm, ...] = get_args(TsigAlgorithm)
DEFAULT_ALGORITHM: TsigAlgorithm = "hmac-sha256"


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A key as clients configure it: ``name`` absolute, ``secret`` raw bytes."""

    name: str
    algorithm: TsigAlgorithm
    secret: bytes

    @property
    def secret_b64(self) -> str:
        return base64.b64encode(self.secret).decode()

    def dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, algorithm_name(self.algorithm))


def algorithm_name(algorithm: str) -> dns.name.Name:
    return dns.name.from_text(algorithm)


def new_key(token_name: str, algorithm: str) -> TsigKey:
    """A fresh random key for ``token_name``, as long as the algorithm's digest."""
    if algorithm not in ALGORITHMS:
        raise InvalidRequestError(
            f"TSIG algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    try:
        name = dns.name.from_text(token_name).to_text().lower()
    except dns.exception.DNSException:
        raise InvalidRequestError(
            f"token {token_name!r} cannot have a TSIG key: the key is named after the token, "
            "so the name must also be a domain name (no empty labels)"
        ) from None
    size = hashlib.new(algorithm.removeprefix("hmac-")).digest_size
    return TsigKey(name, algorithm, secrets.token_bytes(size))
