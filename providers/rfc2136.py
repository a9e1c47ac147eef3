"""Any RFC 2136 server (BIND, Knot, PowerDNS, ...): dynamic UPDATE over TCP, TSIG-signed.

Adding a value is a prerequisite-free add of one TXT record and removing one is a
delete of that record alone, so the server keeps the other values and concurrent
writers cannot clobber each other. Zones are configured (finding them would need a
resolver); the primary is the configured server or each zone's SOA MNAME, looked up
on first use. Edits queued while an update is in flight go out as one UPDATE.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from typing import ClassVar, Literal

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver
import dns.tsig
import dns.update
from pydantic import Field, field_validator, model_validator

from broker.propagation.settings import format_server, parse_server
from broker.values import Duration, Secret
from providers.base import (
    Capabilities,
    Change,
    DnsProvider,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    ZoneNotFoundError,
)
from providers.batching import ChangeBatcher, TxtEdit
from providers.settings import ProviderSettingsModel
from providers.txt import MAX_STRING_OCTETS

log = logging.getLogger(__name__)

TXT = dns.rdatatype.TXT
TsigAlgorithm = Literal[
    "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5"
]
Address = tuple[str, int]


class Rfc2136Settings(ProviderSettingsModel):
    type: Literal["rfc2136"]
    zones: list[str] = Field(min_length=1)
    server: str | None = None
    """The primary, ``IP`` or ``IP:PORT``; default: each zone's SOA MNAME, on ``port``."""
    port: int = Field(53, ge=1, le=65535)
    resolvers: list[str] = Field(default_factory=list)
    """Resolvers for the SOA MNAME lookup, ``IP[:PORT]``; empty: /etc/resolv.conf."""
    tsig_key_name: str | None = None
    tsig_secret: Secret | None = None
    """Base64, as in the server's key file; unset with tsig_key_name: unsigned updates."""
    tsig_algorithm: TsigAlgorithm = "hmac-sha256"
    timeout: Duration = Field(5.0, le=120)
    """Timeout of each UPDATE or query (and of the MNAME lookup)."""

    @field_validator("server")
    @classmethod
    def _server(cls, server: str | None) -> str | None:
        return None if server is None else format_server(*parse_server(server))

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, resolvers: list[str]) -> list[str]:
        return [format_server(*parse_server(resolver)) for resolver in resolvers]

    @field_validator("tsig_key_name")
    @classmethod
    def _key_name(cls, name: str | None) -> str | None:
        try:
            return None if name is None else dns.name.from_text(name).to_text().lower()
        except dns.exception.DNSException as exc:
            raise ValueError(f"tsig_key_name {name!r} is not a domain name: {exc}") from None

    @model_validator(mode="after")
    def _tsig(self) -> Rfc2136Settings:
        if (self.tsig_key_name is None) != (self.tsig_secret is None):
            raise ValueError("give both tsig_key_name and tsig_secret, or neither")
        if self.tsig_secret is not None:
            try:
                base64.b64decode(self.tsig_secret.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("tsig_secret must be base64, as in the server's key") from None
        return self


class Rfc2136Provider(DnsProvider):
    capabilities: ClassVar[Capabilities] = Capabilities(
        applies_synchronously=True, merges_concurrent_changes=True
    )

    def __init__(self, name: str, settings: Rfc2136Settings) -> None:
        super().__init__(name)
        self.settings = settings
        self._key: dns.tsig.Key | None = None
        if settings.tsig_key_name is not None and settings.tsig_secret is not None:
            self._key = dns.tsig.Key(
                settings.tsig_key_name,
                settings.tsig_secret.get_secret_value(),
                settings.tsig_algorithm + ".",
            )
        self._primaries: dict[str, Address] = {}
        self._batcher = ChangeBatcher(name, self._apply)

    async def close(self) -> None:
        await self._batcher.close()

    async def check(self) -> None:
        """Each zone's primary answers for it authoritatively and accepts the key (an
        UPDATE whose only content is the prerequisite "the zone has an SOA")."""
        for zone in self.settings.zones:
            await self.list_txt(zone, zone)
            update = self._update(zone)
            update.present(dns.name.from_text(zone), dns.rdatatype.SOA)
            await self._send(zone, update)

    def zones(self) -> tuple[str, ...]:
        return tuple(self.settings.zones)

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        self._require_zone(zone)
        return await self._batcher.submit(zone, TxtEdit(name, value, ttl))

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        self._require_zone(zone)
        return await self._batcher.submit(zone, TxtEdit(name, value))

    async def list_txt(self, zone: str, name: str) -> list[str]:
        self._require_zone(zone)
        query = dns.message.make_query(name, TXT)
        if self._key is not None:
            query.use_tsig(self._key)
        response = await self._exchange(zone, query)
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return []
        if rcode != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
            answer = f"answered {dns.rcode.to_text(rcode)} without authority for {name}"
            raise ZoneNotFoundError(self._text(zone, f"{answer}: is it a primary of {zone}?"))
        return [
            b"".join(rdata.strings).decode("utf-8", errors="replace")
            for rrset in response.answer
            if rrset.rdtype == TXT
            for rdata in rrset
        ]

    def _require_zone(self, zone: str) -> None:
        if zone not in self.settings.zones:
            raise ZoneNotFoundError(f"rfc2136 provider {self.name!r} does not serve zone {zone}")

    async def _apply(self, zone: str, edits: Sequence[TxtEdit]) -> Change | None:
        update = self._update(zone)
        for edit in edits:
            data = edit.value.encode("utf-8")
            strings = [
                data[i : i + MAX_STRING_OCTETS] for i in range(0, len(data), MAX_STRING_OCTETS)
            ]
            rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, TXT, strings or [b""])
            if edit.ttl is not None:
                update.add(edit.name, edit.ttl, rdata)
            else:
                update.delete(edit.name, rdata)
        await self._send(zone, update)
        return None

    def _update(self, zone: str) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(zone)
        if self._key is not None:
            update.use_tsig(self._key)
        return update

    async def _send(self, zone: str, update: dns.update.UpdateMessage) -> None:
        response = await self._exchange(zone, update)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTAUTH:
            fix = f"allow key {self.settings.tsig_key_name} to update {zone}"
            if self._key is None:
                fix = "configure tsig_key_name and tsig_secret"
            raise ProviderAuthError(self._text(zone, f"refused the update (NOTAUTH): {fix}"))
        if rcode == dns.rcode.SERVFAIL:
            raise ProviderUnavailableError(self._text(zone, "failed the update (SERVFAIL)"))
        raise ProviderRejectedError(self._text(zone, f"refused the update ({name})"))

    async def _exchange(self, zone: str, message: dns.message.Message) -> dns.message.Message:
        host, port = await self._primary(zone)
        try:
            return await dns.asyncquery.tcp(message, host, port=port, timeout=self.settings.timeout)
        except dns.exception.DNSException as exc:
            raise self._exchange_error(zone, exc) from exc
        except (OSError, EOFError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise ProviderUnavailableError(self._text(zone, detail)) from exc

    def _exchange_error(self, zone: str, exc: dns.exception.DNSException) -> ProviderError:
        key = self.settings.tsig_key_name
        if isinstance(exc, dns.tsig.PeerBadKey):
            detail = (
                f"does not accept TSIG key {key} (BADKEY): the server does not know this key "
                f"name, or its policy does not let the key change {zone}"
            )
            return ProviderAuthError(self._text(zone, detail))
        if isinstance(exc, dns.tsig.PeerBadSignature):
            detail = (
                f"rejected the signature made with TSIG key {key} (BADSIG): tsig_secret or "
                "tsig_algorithm differs from the server's"
            )
            return ProviderAuthError(self._text(zone, detail))
        if isinstance(exc, dns.tsig.PeerBadTime):
            return ProviderAuthError(
                self._text(zone, "rejected the TSIG time (BADTIME): check clocks")
            )
        if isinstance(exc, dns.tsig.PeerError | dns.message.UnknownTSIGKey | dns.tsig.BadSignature):
            return ProviderAuthError(self._text(zone, f"TSIG failed: {exc}"))
        if isinstance(exc, dns.exception.FormError) and "TSIG" in str(exc):
            detail = (
                "answered without a TSIG signature, as servers do for a zone they do not serve: "
                f"is it the primary of {zone}?"
            )
            return ZoneNotFoundError(self._text(zone, detail))
        if isinstance(exc, dns.exception.Timeout):
            detail = f"did not answer within {self.settings.timeout:g} s"
            return ProviderUnavailableError(self._text(zone, detail))
        return ProviderUnavailableError(self._text(zone, f"{type(exc).__name__}: {exc}"))

    def _text(self, zone: str, detail: str) -> str:
        where = self._primaries.get(zone)
        server = format_server(*where) if where else "the primary"
        return f"rfc2136 provider {self.name!r}: server {server} {detail}"

    async def _primary(self, zone: str) -> Address:
        if self.settings.server is not None:
            self._primaries[zone] = parse_server(self.settings.server)
        if zone not in self._primaries:
            self._primaries[zone] = await self._mname_address(zone)
            log.info(
                "rfc2136 provider %s: primary of %s is %s",
                self.name, zone, format_server(*self._primaries[zone]),
            )  # fmt: skip
        return self._primaries[zone]

    async def _mname_address(self, zone: str) -> Address:
        if self.settings.resolvers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_server(server))
                for server in self.settings.resolvers
            ]
        else:
            resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)  # reads resolv.conf
        resolver.lifetime = self.settings.timeout
        try:
            soa = await resolver.resolve(zone, dns.rdatatype.SOA)
            mname = soa[0].mname
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    answer = await resolver.resolve(mname, rdtype)
                except dns.resolver.NoAnswer:
                    continue
                return answer[0].address, self.settings.port
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            raise ZoneNotFoundError(
                f"rfc2136 provider {self.name!r}: {zone} has no SOA, so it is not a zone: {exc}"
            ) from exc
        except dns.exception.DNSException as exc:
            raise ProviderUnavailableError(
                f"rfc2136 provider {self.name!r}: cannot find the primary of {zone} from its "
                f"SOA: {exc}; set server"
            ) from exc
        raise ProviderRejectedError(
            f"rfc2136 provider {self.name!r}: the SOA MNAME {mname} of {zone} has no address; "
            "set server"
        )
