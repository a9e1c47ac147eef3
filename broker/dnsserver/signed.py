"""Messages signed with TSIG (RFC 8945), and UPDATEs (RFC 2136): answered off the fast
path, asynchronously, because finding the key (and applying an update) is.

The key is looked up by its name; a message whose key is unknown gets BADKEY, one whose
MAC does not verify BADSIG (both unsigned, as RFC 8945 5.3.2 says), one signed outside
the allowed clock difference BADTIME, signed with the server's time. A verified QUERY is
answered from the zones, a verified UPDATE by ``apply``; both answers are signed with the
request's key. An unsigned UPDATE is refused.

Over UDP an answer keeps to the same limits as the fast path (512 octets without EDNS,
else the client's payload capped by ours); one that does not fit goes out truncated
(TC=1, sections emptied) and still signed, as RFC 8945 5.3 asks.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.update

from broker.dnsserver.wire import HEADER_SIZE, UDP_PLAIN_LIMIT, header_only

MAX_TCP_MESSAGE = 65535

logger = logging.getLogger(__name__)

KeyLookup = Callable[[str], Awaitable[dns.tsig.Key | None]]
"""The key a name stands for (absolute, lower case), or None when there is none."""

ApplyUpdate = Callable[[dns.update.UpdateMessage, str, str], Awaitable[dns.rcode.Rcode]]
"""Apply a verified update signed by the named key, sent from an address: its rcode."""

Answer = Callable[[dns.message.Message], dns.message.Message]
Report = Callable[[str], None]
Refusal = Callable[[str, str, str], None]
"""An UPDATE refused before it was verified: (source address, key name or ``-``, why:
``unsigned``, ``BADKEY``, ``BADSIG``, ``BADTIME``), for the audit log."""


class SignedMessages:
    def __init__(
        self,
        keys: KeyLookup,
        apply: ApplyUpdate,
        answer: Answer,
        *,
        fudge: float = 300.0,
        report: Report = lambda outcome: None,
        refused: Refusal = lambda source, key, why: None,
        clock: Callable[[], float] = time.time,
        max_udp_payload: int = 1232,
    ) -> None:
        self._refused = refused
        self._max_udp_payload = max_udp_payload
        self._keys = keys
        self._apply = apply
        self._answer = answer
        self._fudge = fudge
        self._report = report
        self._clock = clock

    async def __call__(self, wire: bytes, source: str, udp: bool = False) -> bytes | None:
        if len(wire) < HEADER_SIZE or wire[2] & 0x80:
            return None  # a runt, or a response: never answered
        limit = MAX_TCP_MESSAGE
        try:
            message = dns.message.from_wire(wire, keyring=False)
        except dns.message.ShortHeader:
            return None
        except Exception:  # malformed, whatever dnspython calls it
            self._report("malformed")
            return header_only(wire, dns.rcode.FORMERR)
        if message.flags & 0x8000:
            return None
        if udp:
            limit = _udp_limit(message, self._max_udp_payload)
        update = message.opcode() == dns.opcode.UPDATE
        if not message.had_tsig:
            if update:
                logger.info("update from %s refused: not signed with a TSIG key", source)
                self._report("unsigned")
                self._refused(source, "-", "unsigned")
                return _fit(_response(message, dns.rcode.REFUSED), limit)
            return _fit(self._answer(message), limit)
        assert message.keyname is not None
        name = message.keyname.to_text().lower()
        key = await self._keys(name)
        refusal = (source, name) if update else None
        if key is None or key.algorithm != message.keyalgorithm:
            logger.info("message from %s refused: unknown TSIG key %s", source, name)
            return self._tsig_error(message, dns.rcode.BADKEY, None, limit, refusal)
        try:
            signed = dns.message.from_wire(wire, keyring=key)
        except dns.tsig.BadTime:
            return self._tsig_error(message, dns.rcode.BADTIME, key, limit, refusal)
        except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            logger.info("message from %s refused: bad TSIG signature by %s", source, name)
            return self._tsig_error(message, dns.rcode.BADSIG, None, limit, refusal)
        except Exception:
            self._report("malformed")
            return header_only(wire, dns.rcode.FORMERR)
        if abs(self._clock() - _time_signed(signed)) > self._fudge:
            return self._tsig_error(message, dns.rcode.BADTIME, key, limit, refusal)
        if isinstance(signed, dns.update.UpdateMessage):
            rcode = await self._apply(signed, name, source)
            return _fit(_response(signed, rcode), limit)
        return _fit(self._answer(signed), limit)

    def _tsig_error(
        self,
        message: dns.message.Message,
        error: dns.rcode.Rcode,
        key: dns.tsig.Key | None,
        limit: int,
        refusal: tuple[str, str] | None = None,
    ) -> bytes:
        """``refusal`` (source, key name): the message was an UPDATE, to be audited."""
        response = _response(message, dns.rcode.NOTAUTH)
        assert message.keyname is not None
        assert message.keyalgorithm is not None
        now = int(self._clock())
        if key is not None:
            response.use_tsig(
                key,
                message.keyname,
                original_id=message.id,
                tsig_error=error,
                other_data=struct.pack("!Q", now)[2:],
                algorithm=message.keyalgorithm,
            )
            response.request_mac = message.mac or b""
        else:
            tsig = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
                dns.rdataclass.ANY, dns.rdatatype.TSIG, message.keyalgorithm, now,
                300, b"", message.id, error, b"",
            )  # fmt: skip
            response.tsig = dns.rrset.from_rdata(message.keyname, 0, tsig)
        self._report(dns.rcode.to_text(error))
        if refusal is not None:
            self._refused(*refusal, dns.rcode.to_text(error))
        return _fit(response, limit)


def _response(message: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    """An answer to ``message``, signed with its key where it was verified."""
    response = dns.message.make_response(message)
    response.set_rcode(rcode)
    return response


def _udp_limit(message: dns.message.Message, max_payload: int) -> int:
    if message.edns < 0:
        return UDP_PLAIN_LIMIT
    return min(max(message.payload, UDP_PLAIN_LIMIT), max_payload)


def _fit(response: dns.message.Message, limit: int) -> bytes:
    """``response`` in at most ``limit`` octets: whole, else truncated with its sections
    emptied (signed still), else a bare header with TC=1 (a TSIG record may not fit in
    512 octets beside a long question)."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    response.flags |= dns.flags.TC
    response.answer = []
    response.authority = []
    response.additional = []
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        flags = (response.flags & 0xFFF0) | (response.rcode() & 0x0F)
        return response.id.to_bytes(2) + flags.to_bytes(2) + bytes(8)


def _time_signed(message: dns.message.Message) -> int:
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return int(rdata.time_signed)
