"""A certificate directory for `dns01-broker issue / renew / revoke`.

``DIR`` holds ``privkey.pem`` (0600), ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and
what renewal needs to order again (``renewal.json``: names, CA directory, key type, the
broker to solve through, the account file — never a token). Lineages live under a config
directory (``DIR/<first name>``) and share one ACME account per CA in ``accounts/``
(0600); a lineage made with ``--out`` alone keeps its own ``account.json``. The ACME
client runs here; the DNS part goes through a broker's HTTP API, so this machine holds
at most a scoped token.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from broker.acme import (
    AccountRecord,
    AcmeClient,
    AcmeError,
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
from broker.acme.messages import Directory
from broker.auth import Principal
from broker.dnsname import Scope
from broker.errors import BrokerError, InvalidRequestError

ACCOUNT_FILE = "account.json"
RENEWAL_FILE = "renewal.json"


def default_config_dir() -> Path:
    """Where lineages live: /etc/dns01-broker/live for root, else the user's data dir."""
    if os.geteuid() == 0:
        return Path("/etc/dns01-broker/live")
    return Path.home() / ".local" / "share" / "dns01-broker"


def lineage_dir(config_dir: Path, names: Sequence[str]) -> Path:
    """A lineage's directory, named after its first name (``*.`` as ``_.``, as lego does)."""
    return config_dir / names[0].replace("*", "_")


def account_path(config_dir: Path, directory: str) -> Path:
    """The account file at a CA, shared by every lineage under ``config_dir`` that uses
    that directory: ``accounts/<host>-<digest of the URL>.json``."""
    host = re.sub(r"[^a-z0-9.-]", "_", (urlsplit(directory).hostname or "ca").lower())
    digest = hashlib.sha256(directory.encode()).hexdigest()[:12]
    return config_dir / "accounts" / f"{host}-{digest}.json"


def account_of(out: Path, params: IssueParams) -> Path:
    return Path(params.account) if params.account else out / ACCOUNT_FILE


def lineages(config_dir: Path) -> list[Path]:
    """Every certificate directory under ``config_dir`` that dns01-broker issued."""
    if not config_dir.is_dir():
        return []
    return sorted(d for d in config_dir.iterdir() if (d / RENEWAL_FILE).is_file())


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
    profile: str | None = None
    ca: str | None = None
    """The catalog name the CA was picked by, if it was."""
    deploy_hook: str | None = None
    """A shell command run after each renewal of this lineage."""
    account: str | None = None
    """The ACME account file, shared by the lineages at one CA (None: ``account.json``
    in the lineage, as lineages made with ``--out`` alone keep it)."""
    persist: bool = False
    """Answer with dns-persist-01 where the CA offers it: the broker keeps a standing
    grant for the account (made on first use), else dns-01."""


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
    account = account_of(out, params)
    client = await _client(account, params.directory, params.ca_bundle, params.email, eab)
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
            profile=params.profile,
            persist=solver if params.persist else None,
        )
    write_certificate(out, issued)
    _write(out / RENEWAL_FILE, json.dumps(asdict(params), indent=2) + "\n", 0o644)
    return issued


async def renewal_decision(out: Path, *, within: float = 0.0) -> RenewalDecision:
    params = load_params(out)
    account = account_of(out, params)
    async with await _client(account, params.directory, params.ca_bundle, None, None) as client:
        return await renewal_due(_read(out / "cert.pem"), client, within=within)


async def rollover_account(out: Path) -> Path:
    """Give the account that ``out`` uses a new key; its file then holds only the new one.
    Return that file (every lineage sharing it moves with it)."""
    params = load_params(out)
    account = account_of(out, params)
    async with await _client(account, params.directory, params.ca_bundle, None, None) as client:
        if client.account_url is None:
            await client.find_account()
        key = generate_account_key()
        await client.change_key(key)
        assert client.account_url is not None
        record = AccountRecord(params.directory, client.account_url, key)
    _write(account, dump_account(record).decode(), 0o600)
    return account


async def deactivate_account(out: Path) -> Path:
    """Deactivate the account that ``out`` uses at its CA; its key file is kept aside as
    ``<file>.deactivated`` (a later issue or renewal makes a new account). Return it."""
    params = load_params(out)
    account = account_of(out, params)
    async with await _client(account, params.directory, params.ca_bundle, None, None) as client:
        await client.deactivate_account()
    account.replace(account.with_name(f"{account.name}.deactivated"))
    return account


async def revoke_from(out: Path, reason: int | None) -> None:
    params = load_params(out)
    account = account_of(out, params)
    async with await _client(account, params.directory, params.ca_bundle, None, None) as client:
        await revoke(client, _read(out / "cert.pem"), reason=reason)


async def token_info(broker: Broker, ca_bundle: str | None = None) -> Principal:
    """What the broker says the token may do (``GET /v1/whoami``)."""
    headers = {"Authorization": f"Bearer {broker.token}"}
    status, body = await _get_json(broker.url.rstrip("/") + "/v1/whoami", ca_bundle, headers)
    if status != 200 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else None
        raise InvalidRequestError(
            f"the broker at {broker.url} refused the token: {detail or status}"
        )
    try:
        scopes = tuple(Scope.parse(pattern) for pattern in body["allow"])
        persist = bool(body.get("persist", False))
        return Principal(str(body["name"]), scopes, bool(body["admin"]), persist=persist)
    except (KeyError, TypeError, BrokerError) as exc:
        raise InvalidRequestError(f"{broker.url} is not a dns01-broker ({exc!r})") from None


async def fetch_directory(url: str, ca_bundle: str | None = None) -> Directory:
    """A CA's directory (its terms of service, whether it needs EAB, its profiles)."""
    status, body = await _get_json(url, ca_bundle)
    if status != 200 or not isinstance(body, dict):
        raise InvalidRequestError(f"{url} answered {status}: not an ACME directory")
    try:
        return Directory.from_json(body, url)
    except (ValueError, KeyError, TypeError, AcmeError) as exc:
        raise InvalidRequestError(f"{url} is not an ACME directory ({exc})") from None


async def _get_json(
    url: str, ca_bundle: str | None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """GET ``url``: its status and JSON body (None when it is not JSON); a failure to
    connect or a timeout is an error that says so."""
    connector = aiohttp.TCPConnector(ssl=ssl_context(ca_bundle))
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=15)
            ) as session,
            session.get(url, headers=headers) as response,
        ):
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise InvalidRequestError(f"cannot reach {url}: {reason}") from None


def has_account(account: Path, directory: str) -> bool:
    """Whether ``account`` is an account at ``directory`` already (no terms to agree to)."""
    return account.is_file() and load_account(account.read_bytes()).directory_url == directory


def certificate_of(out: Path) -> x509.Certificate:
    return load_certificate((out / "cert.pem").read_bytes())


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
    account: Path,
    directory: str,
    ca_bundle: str | None,
    email: str | None,
    eab: ExternalAccountBinding | None,
) -> AcmeClient:
    """The account in the file ``account`` at ``directory``, made (and saved 0600) on
    first use."""
    tls = ssl_context(ca_bundle)
    try:
        existing: bytes | None = _read(account)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        record = load_account(existing)
        if record.directory_url == directory:
            return AcmeClient(directory, record.key, account_url=record.account_url, ssl=tls)
    key = generate_account_key()
    client = AcmeClient(directory, key, ssl=tls)
    try:
        contact = (f"mailto:{email}",) if email else ()
        account_record = await client.new_account(contact=contact, eab=eab)
    except BaseException:
        await client.close()
        raise
    os.makedirs(account.parent, mode=0o700, exist_ok=True)
    record = AccountRecord(directory, account_record.url, key)
    _write(account, dump_account(record).decode(), 0o600)
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
