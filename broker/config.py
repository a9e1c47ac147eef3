"""Settings: a TOML file plus ``DNS01_BROKER_*`` environment overrides, validated at once.

Every problem is collected and reported together, each with its key path and how to
fix it. Secrets may be given as ``env:NAME`` or ``file:/path`` references and are
held as SecretStr, so they never reach a log line or a repr.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
)

from broker.dnsname import is_subdomain, normalize_name
from broker.dnsserver.ratelimit import RateLimit
from broker.oidc.keys import KeyFetchError, load_jwks_file
from broker.oidc.settings import OidcSettings
from broker.propagation import PropagationSettings
from broker.tsig import ALGORITHMS, TsigAlgorithm
from broker.values import Duration, Secret
from providers import PROVIDER_TYPES, ProviderSettings, load_provider_type

ENV_PREFIX = "DNS01_BROKER_"
MAX_DNS_WORKERS = 256
CONFIG_ENV = "DNS01_BROKER_CONFIG"
TOKEN_ENV = "DNS01_BROKER_TOKEN"  # noqa: S105 - the variable's name; the CLI's token, not a setting
NOT_SETTINGS = (CONFIG_ENV, TOKEN_ENV)


class ConfigError(Exception):
    """Every problem found in the configuration, as (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


def parse_hostport(text: str, *, what: str) -> tuple[str, int]:
    """``127.0.0.1:8080``, ``[::1]:8053`` or ``localhost:8080``."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.%a-zA-Z]+)\]:(\d+)|([^:\s]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{what} {text!r} must be HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} {text!r}: port must be between 0 and 65535")
    if match.group(1):
        ipaddress.ip_address(host.split("%")[0])
    return host, port


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitSettings(_Section):
    """Token buckets per source address and per token; a rate of 0 turns that one off.

    Generous by default: they stop a runaway client or a password guesser, not an ACME
    client issuing many certificates."""

    address_rate: float = Field(100.0, ge=0, description="requests a second per address")
    address_burst: int = Field(500, ge=1, le=1_000_000)
    token_rate: float = Field(50.0, ge=0, description="requests a second per token")
    token_burst: int = Field(250, ge=1, le=1_000_000)
    max_tracked: int = Field(10000, ge=100, le=1_000_000, description="buckets kept per kind")


class HttpSettings(_Section):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    trusted_proxies: Annotated[list[IPvAnyNetwork], BeforeValidator(_split_list)] = Field(
        default_factory=list
    )
    access_log: bool = False
    shutdown_timeout: Duration = Field(
        10.0, le=600, description="on stop, how long requests in flight may take to finish"
    )
    max_in_flight: int = Field(512, ge=1, le=100_000)
    header_timeout: Duration = 10.0
    body_timeout: Duration = 30.0
    keepalive_timeout: Duration = 75.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_hostport(value, what="listen address")
        return value

    @property
    def address(self) -> tuple[str, int]:
        return parse_hostport(self.listen, what="listen address")


class DnsUpdateSettings(_Section):
    """RFC 2136 updates on the DNS listeners, signed with a token's TSIG key."""

    enabled: bool = True
    algorithms: list[TsigAlgorithm] = Field(default_factory=lambda: list(ALGORITHMS))
    fudge: Duration = Field(300.0, description="largest clock difference a signature may show")
    max_in_flight: int = Field(64, ge=1, le=10000)


class DnsRateLimitSettings(_Section):
    """Response-rate limiting over UDP per source network (broker.dnsserver.ratelimit)."""

    enabled: bool = True
    responses_per_second: float = Field(1000.0, gt=0, le=1_000_000)
    burst: float = Field(200.0, ge=1, le=1_000_000)
    slip: int = Field(
        2, ge=0, le=10, description="every slip-th limited response is sent truncated (TC=1)"
    )
    ipv4_prefix: int = Field(24, ge=8, le=32)
    ipv6_prefix: int = Field(56, ge=16, le=128)
    max_sources: int = Field(65536, ge=1024, le=10_000_000)

    def limit(self) -> RateLimit | None:
        """The DNS server's limit, or None when off."""
        if not self.enabled:
            return None
        return RateLimit(**self.model_dump(exclude={"enabled"}))


class DnsSettings(_Section):
    enabled: bool = True
    listen: Annotated[list[str], BeforeValidator(_split_list)] = Field(
        default_factory=lambda: ["127.0.0.1:8053"]
    )
    max_udp_payload: int = Field(1232, ge=512, le=4096)
    tcp_idle_timeout: Duration = 10.0
    update: DnsUpdateSettings = Field(default_factory=DnsUpdateSettings)
    rate_limit: DnsRateLimitSettings = Field(default_factory=DnsRateLimitSettings)
    workers: int | Literal["auto"] = Field(
        1,
        description=(
            "processes serving the DNS listeners: 1 serves them in the broker's process; "
            "more start worker processes sharing them through SO_REUSEPORT; "
            '"auto" or 0: one per CPU this process may run on'
        ),
    )

    reuseport: bool = Field(
        False,
        description=(
            "with workers > 1: each worker binds its own sockets with SO_REUSEPORT (the "
            "kernel spreads clients by address hash) instead of all sharing one"
        ),
    )

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= MAX_DNS_WORKERS:
            raise ValueError(f'workers must be within 0..{MAX_DNS_WORKERS}, or "auto"')
        return value

    @property
    def worker_count(self) -> int:
        """How many processes serve DNS (``auto`` and 0: the CPUs this process may run
        on; a CPU quota, such as a Kubernetes limit, is not counted)."""
        if self.workers in {"auto", 0}:
            return len(os.sched_getaffinity(0)) or 1
        return int(self.workers)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_hostport(item, what="listen address")
        return value

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [parse_hostport(item, what="listen address") for item in self.listen]


class StoreSettings(_Section):
    url: Secret = Field(default_factory=lambda: SecretStr("sqlite:///var/broker.db"))
    password: Secret | None = Field(
        None, description="PostgreSQL password when the URL carries none (env:/file: reference)"
    )
    pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL connections per replica")
    timeout: Duration = Field(5.0, description="PostgreSQL connect and statement timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if text.startswith("sqlite:///"):
            return value
        if text.startswith(("postgresql://", "postgres://")):
            parsed = urlsplit(text)
            _ = parsed.port  # a port that is no number raises ValueError here
            if not parsed.hostname and "host=" not in parsed.query:
                raise ValueError("a PostgreSQL store url needs a host: postgresql://USER@HOST/DB")
            return value
        raise ValueError(
            "store url must be sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_secret_value().startswith("sqlite:///")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.get_secret_value().removeprefix("sqlite:///"))

    def describe(self) -> str:
        """The store without its password, for logs and ``config check``."""
        if self.is_sqlite:
            return f"sqlite {self.sqlite_path}"
        parsed = urlsplit(self.url.get_secret_value())
        host = parsed.hostname or "(socket)"
        port = f":{parsed.port}" if parsed.port else ""
        return f"postgresql {parsed.username or ''}@{host}{port}{parsed.path}"


class AuthSettings(_Section):
    bootstrap_token_file: Path = Path("var/admin.token")
    secret_key: Secret | None = Field(
        None, description="seals TSIG secrets kept in the store (keep it outside the database)"
    )


class ChallengeSettings(_Section):
    txt_ttl: int = Field(60, ge=0, le=86400)
    max_values_per_name: int = Field(16, ge=1, le=1000)
    default_lease: Duration = 3600.0
    max_lease: Duration = 86400.0
    reconcile_interval: Duration = 5.0
    history_retention: Duration = 7 * 86400.0


class AcmeDnsSettings(_Section):
    enabled: bool = True
    zone: str | None = Field(
        None, description="registrations live at <uuid>.<zone>; default auth.<first embedded zone>"
    )
    registration: Literal["open", "cidr", "closed"] = "open"
    register_from: Annotated[list[IPvAnyNetwork], BeforeValidator(_split_list)] = Field(
        default_factory=list
    )
    hash_key: Secret | None = None

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else normalize_name(value, what="acmedns.zone")


class HttpreqSettings(_Section):
    enabled: bool = True
    base_path: str = ""

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        path = value.rstrip("/")
        if path and (not path.startswith("/") or "//" in path or "{" in path):
            raise ValueError("base_path must be empty or a path such as /httpreq")
        return path


def _directory_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("directory must be the CA's directory URL (https://...)")
    return value


DirectoryUrl = Annotated[str, AfterValidator(_directory_url)]


class CaSettings(_Section):
    """A CA of one's own (a private step-ca, a test CA), offered beside the built-in list."""

    directory: DirectoryUrl
    title: str = ""
    eab_required: bool = False


class AcmeSettings(_Section):
    """The broker's own ACME client, for POST /v1/certificates and `dns01-broker issue`."""

    directory: DirectoryUrl = "https://acme-v02.api.letsencrypt.org/directory"
    email: str | None = None
    eab_kid: str | None = None
    eab_hmac: Secret | None = None
    ca_bundle: Path | None = Field(
        None, description="CA certificates to verify the ACME server's TLS (default: system)"
    )
    account_key_passphrase: Secret | None = Field(
        None, description="encrypts account keys at rest; default: a generated key file"
    )
    passphrase_file: Path = Path("var/acme-account.passphrase")
    key_type: Literal["ec256", "rsa2048", "rsa3072", "rsa4096"] = "ec256"
    propagation_timeout: Duration = 120.0
    order_timeout: Duration = 600.0
    cas: dict[str, CaSettings] = Field(
        default_factory=dict, description="CAs offered by name beside the built-in list"
    )


class AuditSettings(_Section):
    """The audit log of token, registration, challenge and certificate events."""

    enabled: bool = Field(True, description="false records nothing (for measurements)")
    retention: Duration = Field(90 * 86400.0, description="events older than this are purged")
    queue_size: int = Field(
        10_000, ge=100, le=1_000_000, description="events waiting to be written; beyond: dropped"
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(_Section):
    http: HttpSettings = Field(default_factory=HttpSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    challenges: ChallengeSettings = Field(default_factory=ChallengeSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    acmedns: AcmeDnsSettings = Field(default_factory=AcmeDnsSettings)
    httpreq: HttpreqSettings = Field(default_factory=HttpreqSettings)
    propagation: PropagationSettings = Field(default_factory=PropagationSettings)
    acme: AcmeSettings = Field(default_factory=AcmeSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    providers: dict[str, Any] = Field(default_factory=dict)

    def provider_settings(self) -> dict[str, ProviderSettings]:
        return dict(self.providers)


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    raw = _read_toml(path) if path is not None else {}
    problems: list[tuple[str, str]] = []
    _apply_env_overrides(raw, env, problems)
    raw_providers = raw.pop("providers", None)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe(exc, ()))
        settings = None
    providers = _validate_providers(raw_providers, problems)
    problems.extend(_check_consistency(settings, providers))
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings.model_copy(update={"providers": providers})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the config file: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None


def _apply_env_overrides(
    raw: dict[str, Any], env: Mapping[str, str], problems: list[tuple[str, str]]
) -> None:
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        parts = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            problems.append(
                (key, "use double underscores between levels: DNS01_BROKER_HTTP__LISTEN")
            )
            continue
        target = raw
        for part in parts[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append((key, f"{'.'.join(parts)} does not name a setting"))
                break
            target = child
        else:
            target[parts[-1]] = _env_value(env[key])


def _env_value(text: str) -> object:
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def _validate_providers(raw: object, problems: list[tuple[str, str]]) -> dict[str, Any]:
    if raw is None:
        raw = {"embedded": {"type": "embedded"}}
    if not isinstance(raw, dict) or not raw:
        problems.append(("providers", "give at least one [providers.NAME] table with a type"))
        return {}
    validated: dict[str, Any] = {}
    for name, section in raw.items():
        where = ("providers", name)
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
            problems.append((_dotted(where), "provider names use a-z, 0-9, '-' and '_'"))
            continue
        kind = section.get("type") if isinstance(section, dict) else None
        if kind not in PROVIDER_TYPES:
            known = ", ".join(sorted(PROVIDER_TYPES))
            problems.append((_dotted((*where, "type")), f"set type to one of: {known}"))
            continue
        try:
            model, _ = load_provider_type(kind)
            validated[name] = model.model_validate(section)
        except ImportError as exc:
            problems.append((_dotted(where), str(exc)))
        except ValidationError as exc:
            problems.extend(_describe(exc, where))
    return validated


def _check_consistency(
    settings: Settings | None, providers: dict[str, Any]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for name, provider in providers.items():
        for zone in provider.zone_names():
            if zone in owners:
                problems.append(
                    (
                        f"providers.{name}.zones",
                        f"zone {zone} is also served by provider {owners[zone]!r}; "
                        "each zone belongs to one provider",
                    )
                )
            owners[zone] = name
    if settings is not None:
        c = settings.challenges
        if c.default_lease > c.max_lease:
            problems.append(
                ("challenges.default_lease", "must not be longer than challenges.max_lease")
            )
        if (settings.http.tls_cert_file is None) != (settings.http.tls_key_file is None):
            problems.append(
                (
                    "http.tls_cert_file",
                    "give both http.tls_cert_file and http.tls_key_file, or neither",
                )
            )
        if settings.dns.enabled and not settings.dns.listen:
            problems.append(("dns.listen", "give at least one HOST:PORT, or set dns.enabled=false"))
        problems.extend(_check_acmedns(settings.acmedns, providers))
        problems.extend(_check_oidc(settings))
    return problems


def _check_oidc(settings: Settings) -> list[tuple[str, str]]:
    """Every issuer's JWKS file holds usable keys (discovery is fetched on first use)."""
    problems = []
    for index, issuer in enumerate(settings.oidc.issuers):
        if issuer.jwks_file is not None:
            try:
                load_jwks_file(issuer)
            except KeyFetchError as exc:
                problems.append((f"oidc.issuers.{index}.jwks_file", str(exc)))
    return problems


def embedded_zone_names(providers: dict[str, Any]) -> list[str]:
    return [
        zone
        for provider in providers.values()
        if provider.type == "embedded"
        for zone in provider.zone_names()
    ]


def acmedns_zone(settings: Settings) -> str | None:
    """The zone acme-dns registrations live in, or None when the face is off."""
    if not settings.acmedns.enabled:
        return None
    if settings.acmedns.zone is not None:
        return settings.acmedns.zone
    embedded = embedded_zone_names(settings.providers)
    return f"auth.{embedded[0]}" if embedded else None


def _check_acmedns(acmedns: AcmeDnsSettings, providers: dict[str, Any]) -> list[tuple[str, str]]:
    if not acmedns.enabled:
        return []
    embedded = embedded_zone_names(providers)
    if acmedns.zone is None and not embedded:
        return [
            ("acmedns.enabled", "the acme-dns face needs an embedded zone: add one or disable it")
        ]
    if acmedns.zone is not None and not any(is_subdomain(acmedns.zone, z) for z in embedded):
        return [
            (
                "acmedns.zone",
                f"{acmedns.zone} must lie in a zone of an embedded provider "
                f"({', '.join(embedded) or 'none configured'})",
            )
        ]
    if acmedns.registration == "cidr" and not acmedns.register_from:
        return [("acmedns.register_from", 'registration = "cidr" needs at least one CIDR')]
    return []


def zone_owners(settings: Settings) -> dict[str, str]:
    """Zone name -> provider instance name."""
    return {
        zone: name
        for name, provider in settings.providers.items()
        for zone in provider.zone_names()
    }


def _describe(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _dotted((*prefix, *error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting: check the spelling against README's configuration table"
        elif error["type"] == "missing":
            message = "this setting is required"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append((path, message))
    return problems


def _dotted(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"
