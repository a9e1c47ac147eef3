"""Import accounts from an acme-dns database (SQLite file or PostgreSQL URL).

Accounts keep working with their old credentials: the bcrypt hash is kept and checked
once, at the account's first update, which replaces it with the broker's keyed hash.
TXT values are not imported: they are short-lived and clients write them again.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.acmedns import AcmeDnsError, parse_allowfrom
from broker.errors import BrokerError, ConflictError, InvalidRequestError
from broker.store import RegistrationRecord, Store

_BCRYPT = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
_SUBDOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_QUERY = "SELECT Username, Password, Subdomain, AllowFrom FROM records"


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


def read_accounts(source: str) -> list[tuple[Any, ...]]:
    """The rows of acme-dns's ``records`` table."""
    if source.startswith(("postgres://", "postgresql://")):
        return _read_postgres(source)
    path = Path(source.removeprefix("sqlite://"))
    if not path.is_file():
        raise InvalidRequestError(f"{path} is not a file: give an acme-dns SQLite file or URL")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute(_QUERY).fetchall()
    except sqlite3.Error as exc:
        raise InvalidRequestError(f"{path} is not an acme-dns database: {exc}") from None


def _read_postgres(url: str) -> list[tuple[Any, ...]]:
    try:
        import psycopg  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise InvalidRequestError(
            "reading PostgreSQL needs psycopg: pip install 'dns01-broker[postgres]'"
        ) from None
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return list(conn.execute(_QUERY).fetchall())
    except psycopg.Error as exc:
        raise InvalidRequestError(f"cannot read acme-dns's PostgreSQL database: {exc}") from None


def to_registration(row: tuple[Any, ...], now: float) -> RegistrationRecord:
    """One acme-dns row as a registration; ValueError says what is wrong with it."""
    username, password, subdomain, allowfrom = row
    canonical = str(uuid.UUID(str(username)))
    legacy = _text(password)
    if not _BCRYPT.fullmatch(legacy):
        raise ValueError("the password column holds no bcrypt hash")
    if not isinstance(subdomain, str) or not _SUBDOMAIN.fullmatch(subdomain):
        raise ValueError(f"subdomain {subdomain!r} is not valid")
    try:
        entries = json.loads(allowfrom or "[]")
        cidrs = parse_allowfrom(entries if isinstance(entries, list) else [])
    except (json.JSONDecodeError, AcmeDnsError):
        raise ValueError(f"allowfrom {allowfrom!r} is not a list of CIDRs") from None
    return RegistrationRecord(
        username=canonical,
        subdomain=subdomain,
        key_hash=None,
        allowfrom=cidrs,
        created_at=now,
        legacy_bcrypt=legacy,
    )


def _text(value: object) -> str:
    """acme-dns writes the hash as bytes: a BLOB in SQLite; with PostgreSQL's driver
    it may arrive as ``\\x``-prefixed hex."""
    if isinstance(value, memoryview | bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    text = str(value)
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:]).decode("ascii")
        except ValueError:
            return text
    return text


async def import_accounts(store: Store, rows: Iterable[tuple[Any, ...]]) -> ImportReport:
    report = ImportReport()
    now = time.time()
    for row in rows:
        label = str(row[0])
        try:
            record = to_registration(row, now)
        except ValueError as exc:
            report.invalid.append((label, str(exc)))
            continue
        try:
            await store.create_registration(record)
        except ConflictError:
            report.existing.append(record.username)
            continue
        except BrokerError as exc:
            report.invalid.append((label, exc.detail))
            continue
        report.imported.append(record.username)
    return report
