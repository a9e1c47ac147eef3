"""The broker's own authoritative zones: the default provider, needing no credentials.

The zone content lives in memory here and is served by ``broker.dnsserver``; the
broker's store is the durable copy, re-applied at start by the reconciler. Every
mutation bumps the SOA serial and tells the subscribers (the DNS server drops its
cached answers).
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator, model_validator

from broker.dnsname import normalize_name
from providers.base import Capabilities, Change, DnsProvider, ZoneNotFoundError
from providers.faults import FaultSettings
from providers.resilience import RetrySettings

IN = dns.rdataclass.IN
SOA, NS, TXT, A, AAAA, CNAME = (
    dns.rdatatype.SOA,
    dns.rdatatype.NS,
    dns.rdatatype.TXT,
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.CNAME,
)


class NameserverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    addresses: list[IPvAnyAddress] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return normalize_name(value, what="nameserver name")


class EmbeddedZoneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    nameservers: list[NameserverSettings] = Field(default_factory=list)
    hostmaster: str | None = None
    soa_ttl: int = Field(3600, ge=0, le=604800)
    ns_ttl: int = Field(3600, ge=0, le=604800)
    refresh: int = Field(3600, ge=0)
    retry: int = Field(600, ge=0)
    expire: int = Field(604800, ge=0)
    minimum: int = Field(60, ge=0, le=86400, description="negative-caching TTL")

    @field_validator("name", "hostmaster")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else normalize_name(value, what="zone name")

    @model_validator(mode="after")
    def _defaults(self) -> EmbeddedZoneSettings:
        if not self.nameservers:
            default = NameserverSettings(
                name=f"ns1.{self.name}", addresses=[ipaddress.ip_address("127.0.0.1")]
            )
            object.__setattr__(self, "nameservers", [default])
        if self.hostmaster is None:
            object.__setattr__(self, "hostmaster", f"hostmaster.{self.name}")
        return self


class EmbeddedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["embedded"] = "embedded"
    zones: list[EmbeddedZoneSettings] = Field(
        default_factory=lambda: [EmbeddedZoneSettings(name="example.test")]
    )
    faults: FaultSettings | None = None
    """Injected faults (drills only); the embedded zone needs no retries without them."""
    retry: RetrySettings = Field(default_factory=RetrySettings)

    def zone_names(self) -> tuple[str, ...]:
        return tuple(zone.name for zone in self.zones)


@dataclass(frozen=True, slots=True)
class NodeState:
    """One owner name's content as plain data: static RRsets (type -> TTL and rdata
    texts), TXT values and their TTL, and whether it is reserved."""

    static: Mapping[int, tuple[int, list[str]]]
    txt: list[str]
    txt_ttl: int
    reserved: bool


@dataclass(frozen=True, slots=True)
class Node:
    """The RRsets at one owner name, by type."""

    rrsets: Mapping[int, dns.rrset.RRset]


class EmbeddedZone:
    """One authoritative zone: SOA and NS at the apex, glue, and challenge TXT values.

    Inside, owner names are keyed by their lower-case text. Changes only touch plain
    lists and counters; the RRsets of a name are built when the DNS server first asks
    for them after a change, so a present does no DNS rendering.
    """

    def __init__(self, settings: EmbeddedZoneSettings) -> None:
        self.settings = settings
        self.origin = dns.name.from_text(settings.name)
        self._origin_key = settings.name
        self.serial = int(time.time()) & 0xFFFFFFFF
        self.on_change: Callable[[str], None] | None = None
        self._static: dict[str, dict[int, dns.rrset.RRset]] = {}
        self._txt: dict[str, list[str]] = {}
        self._txt_ttl: dict[str, int] = {}
        self._reserved: set[str] = set()
        self._owners: set[str] = set()
        self._existing: dict[str, int] = {}
        self._nodes: dict[str, Node] = {}
        self._soa: dns.rrset.RRset | None = None
        self._soa_rdata = dns.rdata.from_text(
            IN,
            SOA,
            f"{settings.nameservers[0].name} {settings.hostmaster} {self.serial} "
            f"{settings.refresh} {settings.retry} {settings.expire} {settings.minimum}",
        )
        self._build_static()

    def _build_static(self) -> None:
        s = self.settings
        ns_rrset = dns.rrset.RRset(self.origin, IN, NS)
        ns_rrset.update_ttl(s.ns_ttl)
        for ns in s.nameservers:
            ns_rrset.add(dns.rdata.from_text(IN, NS, ns.name))
            if dns.name.from_text(ns.name).is_subdomain(self.origin):
                for address in ns.addresses:
                    self._add_static(ns.name, _address_rdata(address), s.ns_ttl)
        self._static.setdefault(self._origin_key, {})[NS] = ns_rrset
        for key in list(self._static):
            self._track_owner(key)

    def _add_static(self, key: str, rdata: dns.rdata.Rdata, ttl: int) -> None:
        node = self._static.setdefault(key, {})
        rrset = node.get(rdata.rdtype)
        if rrset is None:
            rrset = node[rdata.rdtype] = dns.rrset.RRset(dns.name.from_text(key), IN, rdata.rdtype)
            rrset.update_ttl(ttl)
        rrset.add(rdata)

    def add_static(self, rrset: dns.rrset.RRset) -> None:
        """Serve a fixed RRset (CNAMEs for delegation, registered names, tests)."""
        key = _key(rrset.name)
        self._static.setdefault(key, {})[rrset.rdtype] = rrset
        self._changed(key)

    def remove_static(self, name: str, rdtype: int) -> None:
        if self._static.get(name, {}).pop(rdtype, None) is not None:
            if not self._static[name]:
                del self._static[name]
            self._changed(name)

    def add_txt(self, name: str, value: str, ttl: int) -> bool:
        """Add ``value`` at ``name`` (absolute, lower case); False when nothing changed."""
        values = self._txt.setdefault(name, [])
        if value in values and self._txt_ttl.get(name) == ttl:
            return False
        if value not in values:
            values.append(value)
        self._txt_ttl[name] = ttl
        self._changed(name)
        return True

    def remove_txt(self, name: str, value: str) -> bool:
        values = self._txt.get(name)
        if not values or value not in values:
            return False
        values.remove(value)
        if not values:
            del self._txt[name]
            del self._txt_ttl[name]
        self._changed(name)
        return True

    def set_txt(self, name: str, values: list[str], ttl: int) -> bool:
        """Make ``values`` (in order) the TXT values at ``name``; False when they were."""
        if self._txt.get(name, []) == values and (not values or self._txt_ttl.get(name) == ttl):
            return False
        if values:
            self._txt[name], self._txt_ttl[name] = list(values), ttl
        else:
            self._txt.pop(name, None)
            self._txt_ttl.pop(name, None)
        self._changed(name)
        return True

    def txt_names(self) -> list[str]:
        return list(self._txt)

    def txt_values(self, name: str) -> list[str]:
        return list(self._txt.get(name, ()))

    def reserve(self, name: str) -> None:
        """Make ``name`` exist with no records (NODATA, not NXDOMAIN), e.g. an acme-dns
        registration before its first value."""
        if name not in self._reserved:
            self._reserved.add(name)
            self._changed(name)

    def release(self, name: str) -> None:
        if name in self._reserved:
            self._reserved.discard(name)
            self._changed(name)

    def _changed(self, key: str) -> None:
        self.serial = (self.serial + 1) & 0xFFFFFFFF
        self._soa = None
        self._nodes.pop(self._origin_key, None)
        self._nodes.pop(key, None)
        self._track_owner(key)
        if self.on_change is not None:
            self.on_change(key)

    def owner_keys(self) -> list[str]:
        """Every name with records or reserved, as the keys ``node_state`` takes."""
        return list(dict.fromkeys([*self._static, *self._txt, *self._reserved]))

    def node_state(self, key: str) -> NodeState:
        """What ``key`` holds, as plain data another process can ``load_node_state``."""
        static = {
            int(rdtype): (rrset.ttl, [rdata.to_text() for rdata in rrset])
            for rdtype, rrset in self._static.get(key, {}).items()
        }
        return NodeState(
            static, list(self._txt.get(key, ())), self._txt_ttl.get(key, 0), key in self._reserved
        )

    def load_node_state(self, key: str, state: NodeState) -> None:
        """Make ``key`` hold exactly ``state`` (a mirror of another process's zone)."""
        static = {
            rdtype: dns.rrset.from_text_list(key, ttl, IN, dns.rdatatype.RdataType(rdtype), texts)
            for rdtype, (ttl, texts) in state.static.items()
        }
        if static:
            self._static[key] = static
        else:
            self._static.pop(key, None)
        if state.txt:
            self._txt[key], self._txt_ttl[key] = list(state.txt), state.txt_ttl
        else:
            self._txt.pop(key, None)
            self._txt_ttl.pop(key, None)
        if state.reserved:
            self._reserved.add(key)
        else:
            self._reserved.discard(key)
        self._changed(key)

    def set_serial(self, serial: int) -> None:
        """Serve ``serial`` in the SOA (a mirror keeps its source's serial)."""
        self.serial = serial & 0xFFFFFFFF
        self._soa = None
        self._nodes.pop(self._origin_key, None)

    def _track_owner(self, key: str) -> None:
        owns = (
            key in self._static
            or key in self._txt
            or key in self._reserved
            or key == self._origin_key
        )
        if owns and key not in self._owners:
            self._owners.add(key)
            self._count_existence(key, +1)
        elif not owns and key in self._owners:
            self._owners.discard(key)
            self._count_existence(key, -1)

    def _count_existence(self, key: str, delta: int) -> None:
        current = key
        while True:
            count = self._existing.get(current, 0) + delta
            if count:
                self._existing[current] = count
            else:
                self._existing.pop(current, None)
            if current == self._origin_key or "." not in current[:-1]:
                return
            current = current.split(".", 1)[1]

    def node(self, name: dns.name.Name) -> Node | None:
        """The RRsets owned by ``name``, or None when it owns none."""
        key = _key(name)
        node = self._nodes.get(key)
        if node is None and key in self._owners:
            rrsets = self._build_rrsets(key)
            if not rrsets:
                return None
            node = self._nodes[key] = Node(rrsets)
        return node

    def _build_rrsets(self, key: str) -> dict[int, dns.rrset.RRset]:
        rrsets = dict(self._static.get(key, {}))
        if key == self._origin_key:
            rrsets[SOA] = self.soa()
        values = self._txt.get(key)
        if values:
            txt = dns.rrset.RRset(dns.name.from_text(key), IN, TXT)
            txt.update_ttl(self._txt_ttl[key])
            for value in values:
                txt.add(dns.rdtypes.ANY.TXT.TXT(IN, TXT, [value.encode("ascii")]))
            rrsets[TXT] = txt
        return rrsets

    def cname(self, key: str) -> str | None:
        """The target of the CNAME at ``key`` (lower-case absolute text), if there is one."""
        static = self._static.get(key)
        rrset = None if static is None else static.get(CNAME)
        return None if rrset is None else str(rrset[0].target).lower()

    def exists(self, name: dns.name.Name) -> bool:
        """True for owner names and for empty non-terminals (RFC 8020)."""
        return _key(name) in self._existing

    def soa(self) -> dns.rrset.RRset:
        if self._soa is None:
            rrset = dns.rrset.RRset(self.origin, IN, SOA)
            rrset.update_ttl(self.settings.soa_ttl)
            rrset.add(self._soa_rdata.replace(serial=self.serial))
            self._soa = rrset
        return self._soa


def _key(name: dns.name.Name) -> str:
    return name.to_text().lower()


class ZoneSet:
    """The embedded zones, found by longest suffix, with change subscribers."""

    def __init__(self, zones: Iterable[EmbeddedZone] = ()) -> None:
        self._zones: dict[dns.name.Name, EmbeddedZone] = {}
        self._by_key: dict[str, EmbeddedZone] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._name_watchers: list[Callable[[EmbeddedZone, str], None]] = []
        for zone in zones:
            self.add_zone(zone)

    def add_zone(self, zone: EmbeddedZone) -> None:
        zone.on_change = functools.partial(self._zone_changed, zone)
        self._zones[zone.origin] = zone
        self._by_key[_key(zone.origin)] = zone
        self.notify()

    def _zone_changed(self, zone: EmbeddedZone, key: str) -> None:
        for watcher in self._name_watchers:
            watcher(zone, key)
        self.notify()

    def watch_names(self, callback: Callable[[EmbeddedZone, str], None]) -> None:
        """``callback(zone, key)`` runs (synchronously) after every change to the name
        ``key`` of ``zone``."""
        self._name_watchers.append(callback)

    def zones(self) -> list[EmbeddedZone]:
        return list(self._zones.values())

    def find(self, name: dns.name.Name) -> EmbeddedZone | None:
        """The most specific zone containing ``name`` (compared case-insensitively)."""
        current = name
        while True:
            zone = self._zones.get(current)
            if zone is not None:
                return zone
            if current in (dns.name.root, dns.name.empty):
                return None
            current = current.parent()

    def find_key(self, key: str) -> EmbeddedZone | None:
        """``find`` for a name as lower-case absolute text (no parsing on the API path)."""
        while True:
            zone = self._by_key.get(key)
            if zone is not None or key == ".":
                return zone
            _, _, key = key.partition(".")
            if not key:
                return None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """``callback`` runs (synchronously) after every change to any zone."""
        self._subscribers.append(callback)

    def notify(self) -> None:
        for callback in self._subscribers:
            callback()


class EmbeddedProvider(DnsProvider):
    capabilities: ClassVar[Capabilities] = Capabilities(keeps_records=False, can_fail=False)

    def __init__(self, name: str, settings: EmbeddedSettings, zone_set: ZoneSet | None = None):
        super().__init__(name)
        self.settings = settings
        self.zone_set = zone_set if zone_set is not None else ZoneSet()
        self._by_name: dict[str, EmbeddedZone] = {}
        for zone_settings in settings.zones:
            zone = EmbeddedZone(zone_settings)
            self._by_name[zone_settings.name] = zone
            self.zone_set.add_zone(zone)

    async def check(self) -> None:
        return None

    def zones(self) -> tuple[str, ...]:
        return self.settings.zone_names()

    def _zone(self, zone: str) -> EmbeddedZone:
        found = self._by_name.get(zone)
        if found is None:
            raise ZoneNotFoundError(f"provider {self.name!r} does not serve zone {zone}")
        return found

    async def add_txt(self, zone: str, name: str, value: str, ttl: int) -> Change | None:
        self._zone(zone).add_txt(name, value, ttl)
        return None

    async def remove_txt(self, zone: str, name: str, value: str) -> Change | None:
        self._zone(zone).remove_txt(name, value)
        return None

    async def list_txt(self, zone: str, name: str) -> list[str]:
        return self._zone(zone).txt_values(name)

    def replace_txt(self, zone: str, name: str, values: list[str], ttl: int) -> None:
        """Serve exactly ``values`` at ``name``: what the store holds, after another
        replica changed it."""
        self._zone(zone).set_txt(name, values, ttl)

    def load_txt(self, values: Mapping[tuple[str, str], list[str]], ttl: int) -> None:
        """Serve exactly ``values`` ((zone, name) -> values) in every zone; names not in it
        lose their TXT values."""
        for zone_name, zone in self._by_name.items():
            wanted = {name: v for (z, name), v in values.items() if z == zone_name}
            for name in zone.txt_names():
                if name not in wanted:
                    zone.set_txt(name, [], ttl)
            for name, name_values in wanted.items():
                zone.set_txt(name, name_values, ttl)


def _address_rdata(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.rdata.Rdata:
    return dns.rdata.from_text(IN, A if address.version == 4 else AAAA, str(address))
