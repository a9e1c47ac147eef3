"""What the embedded zones say about one question, and that answer rendered to wire form.

A query of type ANY for a name that owns records is answered as RFC 8482 4.2 suggests:
one synthesized HINFO record (CPU "RFC8482", OS ""), over UDP and TCP alike, so ANY
cannot be used to amplify a reflection and tells nothing a typed query does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from providers.embedded import EmbeddedZone, ZoneSet

_REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
_SERVED_CLASSES = frozenset({dns.rdataclass.IN, dns.rdataclass.ANY})
_APEX_TYPES = frozenset({dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.ANY})
MAX_TCP_MESSAGE = 65535
ANY_HINFO_TTL = 3600
_ANY_HINFO = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.HINFO, '"RFC8482" ""')


@dataclass(frozen=True, slots=True)
class Resolution:
    rcode: dns.rcode.Rcode
    authoritative: bool
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()


REFUSED = Resolution(dns.rcode.REFUSED, authoritative=False)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response as sent in full, and its truncated form for a UDP size limit."""

    full: bytes
    truncated: bytes
    rcode: dns.rcode.Rcode


def resolve(
    zones: ZoneSet,
    qname: dns.name.Name,
    qtype: int,
    qclass: int,
    apex: Mapping[dns.name.Name, EmbeddedZone] | None = None,
) -> Resolution:
    if qtype in _REFUSED_TYPES or qclass not in _SERVED_CLASSES:
        return REFUSED
    zone = zones.find(qname)
    if zone is None:
        return _apex_only(apex, qname, qtype)
    node = zone.node(qname)
    if node is None:
        return _negative(zone, qname)
    rrsets = node.rrsets
    if qtype == dns.rdatatype.ANY:
        return _minimal_any(qname)
    rrset = rrsets.get(qtype)
    if rrset is not None:
        return _positive((rrset,))
    cname = rrsets.get(dns.rdatatype.CNAME)
    if cname is not None and qtype != dns.rdatatype.CNAME:
        return _follow_cname(zones, zone, qname, cname, qtype)
    return _negative(zone, qname)


def _apex_only(
    apex: Mapping[dns.name.Name, EmbeddedZone] | None, qname: dns.name.Name, qtype: int
) -> Resolution:
    """For a zone this server takes updates for but does not serve: SOA and NS at its
    apex, and "no SOA here" below it (so clients walking up by SOA find the apex)."""
    if not apex:
        return REFUSED
    zone = apex.get(qname)
    if zone is not None and qtype in _APEX_TYPES:
        node = zone.node(qname)
        assert node is not None
        if qtype == dns.rdatatype.ANY:
            return _minimal_any(qname)
        return _positive((node.rrsets[qtype],))
    if qtype != dns.rdatatype.SOA:
        return REFUSED
    for parent in _parents(qname):
        zone = apex.get(parent)
        if zone is not None:
            return Resolution(dns.rcode.NOERROR, True, authority=(negative_soa(zone),))
    return REFUSED


def _minimal_any(qname: dns.name.Name) -> Resolution:
    return _positive((dns.rrset.from_rdata(qname, ANY_HINFO_TTL, _ANY_HINFO),))


def _parents(name: dns.name.Name) -> list[dns.name.Name]:
    parents = []
    while name not in (dns.name.root, dns.name.empty):
        name = name.parent()
        parents.append(name)
    return parents


def _positive(answer: tuple[dns.rrset.RRset, ...]) -> Resolution:
    return Resolution(dns.rcode.NOERROR, authoritative=True, answer=answer)


def _negative(zone: EmbeddedZone, qname: dns.name.Name) -> Resolution:
    rcode = dns.rcode.NOERROR if zone.exists(qname) else dns.rcode.NXDOMAIN
    return Resolution(rcode, authoritative=True, authority=(negative_soa(zone),))


def negative_soa(zone: EmbeddedZone) -> dns.rrset.RRset:
    """The zone SOA with the negative-caching TTL of RFC 2308: min(SOA TTL, minimum)."""
    soa = zone.soa()
    return dns.rrset.from_rdata_list(soa.name, min(soa.ttl, soa[0].minimum), list(soa))


def _follow_cname(
    zones: ZoneSet,
    zone: EmbeddedZone,
    qname: dns.name.Name,
    cname: dns.rrset.RRset,
    qtype: int,
) -> Resolution:
    target: dns.name.Name = cname[0].target
    if target == qname or zones.find(target) is not zone:
        return _positive((cname,))
    node = zone.node(target)
    if node is None:
        negative = _negative(zone, target)
        return Resolution(negative.rcode, True, (cname,), negative.authority)
    rrset = node.rrsets.get(qtype)
    if rrset is None:
        return Resolution(dns.rcode.NOERROR, True, (cname,), (negative_soa(zone),))
    return _positive((cname, rrset))


@dataclass(frozen=True, slots=True)
class Question:
    name: dns.name.Name
    rdtype: int
    rdclass: int


def render(
    query_id: int,
    query_flags: int,
    question: Question,
    resolution: Resolution,
    edns_payload: int | None,
) -> Rendered:
    """Wire forms of the response; ``edns_payload`` is our OPT payload, None without EDNS.

    Names are compressed against the question, so every owner equal to the question name
    is a pointer to offset 12 and takes the letter case the question was written in.
    """
    full = _message(query_id, query_flags, question, resolution.rcode, edns_payload)
    full.flags |= dns.flags.AA if resolution.authoritative else 0
    full.answer = [*resolution.answer]
    full.authority = [*resolution.authority]
    truncated = _message(query_id, query_flags, question, resolution.rcode, edns_payload)
    truncated.flags |= dns.flags.TC | (dns.flags.AA if resolution.authoritative else 0)
    truncated_wire = truncated.to_wire(max_size=MAX_TCP_MESSAGE)
    try:
        full_wire = full.to_wire(max_size=MAX_TCP_MESSAGE)
    except dns.exception.TooBig:
        full_wire = truncated_wire
    return Rendered(full_wire, truncated_wire, resolution.rcode)


def render_error(
    query_id: int,
    query_flags: int,
    question: Question | None,
    rcode: dns.rcode.Rcode,
    edns_payload: int | None,
) -> bytes:
    message = _message(query_id, query_flags, question, rcode, edns_payload)
    return message.to_wire(max_size=MAX_TCP_MESSAGE)


def _message(
    query_id: int,
    query_flags: int,
    question: Question | None,
    rcode: dns.rcode.Rcode,
    edns_payload: int | None,
) -> dns.message.Message:
    message = dns.message.Message(id=query_id)
    message.flags = dns.flags.QR | (query_flags & dns.flags.RD)
    message.set_opcode(dns.opcode.from_flags(query_flags))
    if question is not None:
        rdclass = dns.rdataclass.RdataClass.make(question.rdclass)
        rdtype = dns.rdatatype.RdataType.make(question.rdtype)
        message.question = [dns.rrset.RRset(question.name, rdclass, rdtype)]
    if edns_payload is not None:
        message.use_edns(0, 0, edns_payload)
    message.set_rcode(rcode)
    return message
