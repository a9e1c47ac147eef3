"""A certificate directory for `dns01-broker issue / renew / revoke`.

``DIR`` holds ``privkey.pem`` (0600), ``cert.pem``, ``chain.pem``, ``fullchain.pem``, the
ACME account that issued them (``account.json``, 0600) and what renewal needs to order
again (``renewal.json``: names, CA directory, key type, the broker to solve through — never
a token). The ACME client runs here; the DNS part goes through a broker's HTTP API, so
this machine holds at most a scoped token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509

from broker.acme import (
    AccountRecord,
    AcmeClient,
    BrokerApiSolver,
    EventCallback,
    ExternalAccountBinding,
    IssuedCertificate,
    RenewalDecision,
    dump_account,
    generate_account_key,
    issue,
    load_account,
    load_certificate,
    renewal_due,
    revoke,
    ssl_context,
)
from broker.errors import InvalidRequestError

ACCOUNT_FILE = "account.json"
RENEWAL_FILE = "renewal.json"


@dataclass(frozen=True, slots=True)
class IssueParams:
    names: tuple[str, ...]
    directory: str
    key_type: str = "ec256"
    server: str | None = None
    email: str | None = None
    ca_bundle: str | None = None
    preferred_chain: str | None = None
    propagation_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the DNS part goes: a broker's base URL and a token whose scope covers the names."""

    url: str
    token: str


async def issue_into(
    out: Path,
    params: IssueParams,
    broker: Broker,
    *,
    eab: ExternalAccountBinding | None = None,
    replace: bool = False,
    on_event: EventCallback | None = None,
) -> IssuedCertificate:
    """Issue (or with ``replace``, renew) the certificate of ``out``."""
    current = _prepare(out, replace)
    client = await _client(out, params.directory, params.ca_bundle, params.email, eab)
    async with client, BrokerApiSolver(broker.url, broker.token) as solver:
        issued = await issue(
            client,
            params.names,
            solver,
            params.key_type,
            replaces=current,
            preferred_chain=params.preferred_chain,
            on_event=on_event,
            propagation_timeout=params.propagation_timeout,
        )
    write_certificate(out, issued)
    _write(out / RENEWAL_FILE, json.dumps(asdict(params), indent=2) + "\n", 0o644)
    return issued


async def renewal_decision(out: Path, *, within: float = 0.0) -> RenewalDecision:
    params = load_params(out)
    async with await _client(out, params.directory, params.ca_bundle, None, None) as client:
        return await renewal_due(_read(out / "cert.pem"), client, within=within)


async def revoke_from(out: Path, reason: int | None) -> None:
    params = load_params(out)
    async with await _client(out, params.directory, params.ca_bundle, None, None) as client:
        await revoke(client, _read(out / "cert.pem"), reason=reason)


def _prepare(out: Path, replace: bool) -> x509.Certificate | None:
    """The directory exists; the certificate to replace, if any. (Files here are small
    and local, and these functions serve the CLI, whose loop has nothing else to do.)"""
    out.mkdir(mode=0o755, parents=True, exist_ok=True)
    return load_certificate((out / "cert.pem").read_bytes()) if replace else None


def _read(path: Path) -> bytes:
    return path.read_bytes()


def load_params(out: Path) -> IssueParams:
    try:
        document = json.loads((out / RENEWAL_FILE).read_text())
        document["names"] = tuple(document["names"])
        return IssueParams(**document)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(
            f"{out} holds no certificate issued by dns01-broker ({RENEWAL_FILE}: {exc})"
        ) from None


async def _client(
    out: Path,
    directory: str,
    ca_bundle: str | None,
    email: str | None,
    eab: ExternalAccountBinding | None,
) -> AcmeClient:
    """The account of ``out`` at ``directory``, made (and saved 0600) on first use."""
    tls = ssl_context(ca_bundle)
    path = out / ACCOUNT_FILE
    existing = _read(path) if path.is_file() else None
    if existing is not None:
        record = load_account(existing)
        if record.directory_url == directory:
            return AcmeClient(directory, record.key, account_url=record.account_url, ssl=tls)
    key = generate_account_key()
    client = AcmeClient(directory, key, ssl=tls)
    try:
        contact = (f"mailto:{email}",) if email else ()
        account = await client.new_account(contact=contact, eab=eab)
    except BaseException:
        await client.close()
        raise
    _write(path, dump_account(AccountRecord(directory, account.url, key)).decode(), 0o600)
    return client


def write_certificate(out: Path, issued: IssuedCertificate) -> None:
    _write(out / "privkey.pem", issued.private_key_pem, 0o600)
    _write(out / "cert.pem", issued.certificate_pem, 0o644)
    _write(out / "chain.pem", issued.chain_pem, 0o644)
    _write(out / "fullchain.pem", issued.fullchain_pem, 0o644)


def _write(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically; a secret file never exists with a wider mode."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def names_of(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value.strip().lower() for value in values if value.strip()))
