"""One DNS exchange with one server, and reading what came back.

Every exchange is bounded: UDP with EDNS0 (payload 1232) and ``timeout``, then, only
when the answer came back truncated, TCP with the same ``timeout``. Anything but a
usable response becomes a ``QueryError`` whose text goes into reports as it is.
"""

from __future__ import annotations

import copy
import errno
import functools
import logging
from typing import Any

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

logger = logging.getLogger(__name__)

EDNS_PAYLOAD = 1232
MAX_ANSWER_CHAIN = 8
ANSWERED_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
# This host has no route to the address at all (typically IPv6 in a v4-only container).
UNROUTABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL})


class QueryError(Exception):
    """No usable response; the text says why (``UDP timeout after 1 s``...).

    ``unroutable``: this host cannot reach the address at all, so no answer can come
    from it whatever the server does.
    """

    def __init__(self, reason: str, *, unroutable: bool = False) -> None:
        super().__init__(reason)
        self.unroutable = unroutable


async def exchange(
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    address: str,
    port: int,
    *,
    recursive: bool,
    attempt_timeout: float,
) -> dns.message.Message:
    """The response of ``address``:``port`` to ``name``/``rdtype``, RD set if ``recursive``;
    each attempt (UDP, then TCP) bounded by ``attempt_timeout`` seconds."""
    timeout = attempt_timeout
    query = copy.copy(_template(name, rdtype, recursive))
    query.id = dns.entropy.random_16()
    transport = "UDP"
    try:
        response = await dns.asyncquery.udp(
            query, address, timeout=timeout, port=port, ignore_unexpected=True
        )
        if response.flags & dns.flags.TC:
            transport = "TCP"
            response = await dns.asyncquery.tcp(query, address, timeout=timeout, port=port)
    except dns.exception.Timeout:
        raise QueryError(f"{transport} timeout after {timeout:g} s") from None
    except ConnectionRefusedError:
        raise QueryError(f"{transport} connection refused") from None
    except OSError as exc:
        reason = f"{transport} {exc.strerror or type(exc).__name__}"
        raise QueryError(reason, unroutable=exc.errno in UNROUTABLE_ERRNOS) from None
    except EOFError:
        raise QueryError(f"{transport} connection closed before the response") from None
    except Exception as exc:  # hostile bytes: dnspython's parse errors and whatever else
        logger.debug("unusable response from %s port %d", address, port, exc_info=True)
        reason = str(exc) or type(exc).__name__
        raise QueryError(f"{transport} malformed response: {reason}") from None
    return response


class _RenderedQuery(dns.message.QueryMessage):
    """A query rendered once: ``to_wire`` gives the same octets under the message's ID.
    Polling asks the same few names again and again; rendering them each time was a
    third of the cost of a query."""

    rendered = b""

    def to_wire(self, *args: Any, **kwargs: Any) -> bytes:
        if args or kwargs or not self.rendered:
            return super().to_wire(*args, **kwargs)
        return self.id.to_bytes(2, "big") + self.rendered[2:]


@functools.lru_cache(maxsize=1024)
def _template(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, recursive: bool
) -> _RenderedQuery:
    """The query for ``name``/``rdtype`` (EDNS0, RD if ``recursive``), rendered; copy it
    and give the copy an ID of its own."""
    query = dns.message.make_query(
        name,
        rdtype,
        use_edns=0,
        payload=EDNS_PAYLOAD,
        flags=dns.flags.RD if recursive else dns.flags.Flag(0),
    )
    query.__class__ = _RenderedQuery
    assert isinstance(query, _RenderedQuery)
    query.rendered = query.to_wire()
    return query


def find_rrset(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN:
            return rrset
    return None


def follow_answer(
    response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[dns.name.Name, dns.rrset.RRset | None]:
    """The name reached through the answer section's CNAMEs from ``qname`` (at most
    ``MAX_ANSWER_CHAIN``, loops stop), and its ``rdtype`` RRset when present."""
    name = qname
    visited = {qname}
    for _ in range(MAX_ANSWER_CHAIN + 1):
        rrset = find_rrset(response.answer, name, rdtype)
        if rrset is not None:
            return name, rrset
        alias = find_rrset(response.answer, name, dns.rdatatype.CNAME)
        target = cname_target(alias)
        if target is None or target in visited:
            break
        visited.add(target)
        name = target
    return name, None


def cname_target(rrset: dns.rrset.RRset | None) -> dns.name.Name | None:
    if rrset is None:
        return None
    for rdata in rrset:
        if isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME):
            return rdata.target
    return None


def txt_values(rrset: dns.rrset.RRset | None) -> tuple[bytes, ...]:
    """Each TXT record's strings joined (RFC 7208 style), in answer order."""
    if rrset is None:
        return ()
    return tuple(
        b"".join(rdata.strings) for rdata in rrset if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    )


def lame_reason(response: dns.message.Message) -> str | None:
    """Why an authoritative server's response is not an authoritative answer, or None."""
    rcode = response.rcode()
    if rcode not in ANSWERED_RCODES:
        return dns.rcode.to_text(rcode)
    if response.flags & dns.flags.AA:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.NS:
            return f"not authoritative (referral to {rrset.name})"
    return "not authoritative (AA not set)"


def negative_ttl(response: dns.message.Message) -> int | None:
    """How long a negative answer may be cached: min(SOA TTL, SOA minimum), RFC 2308."""
    for rrset in response.authority:
        if rrset.rdtype != dns.rdatatype.SOA:
            continue
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA):
                return int(min(rrset.ttl, rdata.minimum))
    return None


def authority_soa_owner(response: dns.message.Message) -> dns.name.Name | None:
    """The owner of the SOA in the authority section (the zone of a negative answer)."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.rdclass == dns.rdataclass.IN:
            return rrset.name
    return None
