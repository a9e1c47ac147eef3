"""Query bytes in, response bytes out: cached wire templates, with a full parse as fallback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode

from broker.dnsserver.answers import Question, Rendered, render, render_error, resolve
from broker.dnsserver.wire import HEADER_SIZE, UDP_PLAIN_LIMIT, header_only, parse_simple
from providers.embedded import EmbeddedZone, ZoneSet

RCODE_SLOTS = 24
_NO_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_ONE_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_BARE_OPT_OWNER_AND_TYPE = b"\x00\x00\x29"
_BARE_OPT_SIZE = 11


class _Signed(bytes):
    pass


SIGNED = _Signed()
"""What ``respond`` returns for an UPDATE or a TSIG-signed message when those are taken
elsewhere (broker.dnsserver.signed): the caller hands the message on."""


@dataclass(frozen=True, slots=True)
class Template:
    """A rendered response for one lower-cased question, to be patched per query.

    ``headers[rd]`` and ``truncated_headers[rd]`` are bytes 2-12 with RD cleared or set;
    the tails are everything after the question.
    """

    headers: tuple[bytes, bytes]
    tail: bytes
    truncated_headers: tuple[bytes, bytes]
    truncated_tail: bytes
    size: int
    rcode: int


class Responder:
    """Answers queries from ``zones``, counting answers by transport and rcode.

    ``udp_counts[rcode]`` and ``tcp_counts[rcode]`` are plain counters.
    """

    def __init__(
        self,
        zones: ZoneSet,
        max_udp_payload: int,
        cache_size: int,
        apex: Mapping[dns.name.Name, EmbeddedZone] | None = None,
        *,
        signed_elsewhere: bool = False,
    ) -> None:
        self._zones = zones
        self._apex = apex or {}
        self._signed_elsewhere = signed_elsewhere
        self._max_udp_payload = max_udp_payload
        self._cache_size = cache_size
        self._plain: dict[bytes, Template] = {}
        self._edns: dict[bytes, Template] = {}
        self.udp_counts = [0] * RCODE_SLOTS
        self.tcp_counts = [0] * RCODE_SLOTS

    def clear(self) -> None:
        self._plain.clear()
        self._edns.clear()

    def respond(self, data: bytes, udp: bool) -> bytes | None:
        """The response to send, or None to stay silent.

        A cached question is found by slicing alone: keys are only ever made from
        validated questions, so a hit proves the question well formed. This works for
        queries without OPT or with a bare OPT (no options, version 0) at the end.
        """
        if len(data) < HEADER_SIZE or data[2] & 0x80:
            return None
        if not data[2] & 0x78:
            shape = data[4:12]
            if shape == _NO_OPT:
                template = self._plain.get(data[12:-4].lower() + data[-4:])
                if template is not None:
                    return self._serve(data, len(data), template, UDP_PLAIN_LIMIT, udp)
            elif shape == _ONE_OPT and _is_bare_opt(data):
                end = len(data) - _BARE_OPT_SIZE
                template = self._edns.get(data[12 : end - 4].lower() + data[end - 4 : end])
                if template is not None:
                    payload = (data[-8] << 8) | data[-7]
                    return self._serve(data, end, template, payload, udp)
        return self._respond_parsed(data, udp)

    def fail(self, data: bytes, udp: bool) -> bytes | None:
        """SERVFAIL for a query whose answer raised an unexpected error."""
        if len(data) < HEADER_SIZE or data[2] & 0x80:
            return None
        self._count(dns.rcode.SERVFAIL, udp)
        return header_only(data, dns.rcode.SERVFAIL)

    def _count(self, rcode: int, udp: bool) -> None:
        (self.udp_counts if udp else self.tcp_counts)[rcode] += 1

    def _serve(self, data: bytes, end: int, template: Template, payload: int, udp: bool) -> bytes:
        """``template`` patched with the query's ID, RD bit and question bytes (its case)."""
        size = template.size
        if udp:
            self.udp_counts[template.rcode] += 1
            if size > UDP_PLAIN_LIMIT and (size > payload or size > self._max_udp_payload):
                headers, tail = template.truncated_headers, template.truncated_tail
                return b"".join((data[:2], headers[data[2] & 1], data[HEADER_SIZE:end], tail))
        else:
            self.tcp_counts[template.rcode] += 1
        headers, tail = template.headers, template.tail
        return b"".join((data[:2], headers[data[2] & 1], data[HEADER_SIZE:end], tail))

    def _respond_parsed(self, data: bytes, udp: bool) -> bytes | None:
        query = parse_simple(data)
        if query is None:
            return self._respond_slowly(data, udp)
        end = query.question_end
        key = data[HEADER_SIZE : end - 4].lower() + data[end - 4 : end]
        payload = query.edns_payload
        if payload is None:
            template = self._plain.get(key) or self._remember(self._plain, key, edns=False)
            return self._serve(data, end, template, UDP_PLAIN_LIMIT, udp)
        template = self._edns.get(key) or self._remember(self._edns, key, edns=True)
        return self._serve(data, end, template, payload, udp)

    def _remember(self, cache: dict[bytes, Template], key: bytes, *, edns: bool) -> Template:
        if len(self._plain) + len(self._edns) >= self._cache_size:
            self.clear()
        name = dns.name.from_wire(key, 0)[0]
        question = Question(name, int.from_bytes(key[-4:-2]), int.from_bytes(key[-2:]))
        resolution = resolve(self._zones, name, question.rdtype, question.rdclass, self._apex)
        payload = self._max_udp_payload if edns else None
        template = _template(render(0, 0, question, resolution, payload), len(key))
        cache[key] = template
        return template

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The answer to a parsed query, as a message (which make_response signs with the
        query's key when it had one)."""
        response = dns.message.make_response(query, our_payload=self._max_udp_payload)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        first = query.question[0]
        resolution = resolve(self._zones, first.name, first.rdtype, first.rdclass, self._apex)
        response.set_rcode(resolution.rcode)
        if resolution.authoritative:
            response.flags |= dns.flags.AA
        response.answer = [*resolution.answer]
        response.authority = [*resolution.authority]
        return response

    def _respond_slowly(self, data: bytes, udp: bool) -> bytes | None:
        opcode = (data[2] >> 3) & 0x0F
        if opcode == dns.opcode.UPDATE and self._signed_elsewhere:
            return SIGNED
        try:
            query = dns.message.from_wire(data)
        except dns.message.UnknownTSIGKey:
            if self._signed_elsewhere:
                return SIGNED
            self._count(dns.rcode.FORMERR, udp)
            return header_only(data, dns.rcode.FORMERR)
        except Exception:
            rcode = dns.rcode.NOTIMP if opcode != dns.opcode.QUERY else dns.rcode.FORMERR
            self._count(rcode, udp)
            return header_only(data, rcode)
        payload = self._max_udp_payload if query.edns >= 0 else None
        question = None
        if query.question:
            first = query.question[0]
            question = Question(first.name, first.rdtype, first.rdclass)
        if opcode != dns.opcode.QUERY:
            rcode = dns.rcode.NOTIMP
        elif query.edns > 0:
            rcode = dns.rcode.BADVERS
        elif len(query.question) != 1 or question is None:
            rcode = dns.rcode.FORMERR
        else:
            resolution = resolve(
                self._zones, question.name, question.rdtype, question.rdclass, self._apex
            )
            rendered = render(query.id, query.flags, question, resolution, payload)
            self._count(rendered.rcode, udp)
            return _fit(rendered, query, udp, self._max_udp_payload)
        self._count(rcode, udp)
        return render_error(query.id, query.flags, question, rcode, payload)


def _is_bare_opt(data: bytes) -> bool:
    """Whether the last 11 bytes can be an OPT RR of version 0 without options."""
    return (
        data[-_BARE_OPT_SIZE : -_BARE_OPT_SIZE + 3] == _BARE_OPT_OWNER_AND_TYPE
        and data[-5] == 0
        and data[-2] == data[-1] == 0
    )


def _fit(rendered: Rendered, query: dns.message.Message, udp: bool, max_payload: int) -> bytes:
    if not udp:
        return rendered.full
    limit = UDP_PLAIN_LIMIT
    if query.edns >= 0:
        limit = min(max(query.payload, UDP_PLAIN_LIMIT), max_payload)
    return rendered.full if len(rendered.full) <= limit else rendered.truncated


def _template(rendered: Rendered, question_size: int) -> Template:
    end = HEADER_SIZE + question_size
    full, truncated = rendered.full, rendered.truncated
    return Template(
        headers=(full[2:12], _with_rd(full[2:12])),
        tail=full[end:],
        truncated_headers=(truncated[2:12], _with_rd(truncated[2:12])),
        truncated_tail=truncated[end:],
        size=len(full),
        rcode=int(rendered.rcode),
    )


def _with_rd(header: bytes) -> bytes:
    return bytes((header[0] | 1,)) + header[1:]
