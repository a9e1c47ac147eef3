"""An account as bytes to keep: the CA's directory URL, the account URL and the account
key (encrypted when a passphrase is given). Where the bytes go is the caller's choice."""

from __future__ import annotations

import json
from dataclasses import dataclass

from broker.acme.errors import KeyFormatError
from broker.acme.jws import AccountKey

FORMAT = "dns01-broker-acme-account/1"


@dataclass(frozen=True, slots=True)
class AccountRecord:
    directory_url: str
    account_url: str
    key: AccountKey


def dump_account(record: AccountRecord, *, passphrase: bytes | str | None = None) -> bytes:
    """JSON with the key as PKCS#8 PEM (encrypted with ``passphrase`` if given)."""
    document = {
        "format": FORMAT,
        "directory": record.directory_url,
        "url": record.account_url,
        "key": record.key.to_pem(passphrase).decode(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def load_account(data: bytes, *, passphrase: bytes | str | None = None) -> AccountRecord:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFormatError(f"the account file is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyFormatError(f"not an account file (expected format {FORMAT!r})")
    fields = [document.get(name) for name in ("directory", "url", "key")]
    if not all(isinstance(value, str) and value for value in fields):
        raise KeyFormatError("the account file lacks directory, url or key")
    directory, url, key = (str(value) for value in fields)
    return AccountRecord(directory, url, AccountKey.from_pem(key.encode(), passphrase))
