"""Byte-level reading of the common query shape, and header-only error responses."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 12
MAX_NAME_WIRE = 255
UDP_PLAIN_LIMIT = 512
_ONE_QUESTION_NO_RECORDS = b"\x00\x01\x00\x00\x00\x00"
_OPT_TYPE = b"\x00\x29"
_OPT_FIXED = 11


@dataclass(frozen=True, slots=True)
class SimpleQuery:
    """A QUERY with one uncompressed question and at most one OPT RR (EDNS version 0).

    ``question_end`` is the offset just past qtype and qclass; ``edns_payload`` is the
    client's advertised UDP payload, or None without EDNS.
    """

    question_end: int
    edns_payload: int | None


def parse_simple(data: bytes) -> SimpleQuery | None:
    """The query's shape if it is the common one, else None (the caller parses fully).

    The caller has checked the length (>= 12) and that QR is clear.
    """
    if data[2] & 0x78 or data[4:10] != _ONE_QUESTION_NO_RECORDS or data[10] or data[11] > 1:
        return None
    size = len(data)
    pos = HEADER_SIZE
    while pos < size:
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += length + 1
    else:
        return None
    if pos - HEADER_SIZE >= MAX_NAME_WIRE:
        return None
    question_end = pos + 5
    if not data[11]:
        return SimpleQuery(question_end, None) if question_end == size else None
    return _with_opt(data, question_end)


def _with_opt(data: bytes, opt: int) -> SimpleQuery | None:
    if (
        len(data) < opt + _OPT_FIXED
        or data[opt]
        or data[opt + 1 : opt + 3] != _OPT_TYPE
        or data[opt + 6]
        or opt + _OPT_FIXED + int.from_bytes(data[opt + 9 : opt + 11]) != len(data)
    ):
        return None
    return SimpleQuery(opt, int.from_bytes(data[opt + 3 : opt + 5]))


def truncated_reply(data: bytes) -> bytes | None:
    """A minimal TC=1 response telling the client to ask again over TCP (what a
    rate-limited source gets now and then): the query's ID, opcode, RD and question (when
    its shape is the common one), nothing else. None for a response or a runt."""
    if len(data) < HEADER_SIZE or data[2] & 0x80:
        return None
    flags = 0x82 | (data[2] & 0x79)
    query = parse_simple(data)
    if query is None:
        return bytes((data[0], data[1], flags, 0)) + bytes(8)
    question = data[HEADER_SIZE : query.question_end]
    return bytes((data[0], data[1], flags, 0, 0, 1, 0, 0, 0, 0, 0, 0)) + question


def header_only(data: bytes, rcode: int) -> bytes:
    """A response echoing ID, opcode and RD, with ``rcode`` (< 16) and no sections."""
    flags = 0x80 | (data[2] & 0x79)
    return bytes((data[0], data[1], flags, rcode & 0x0F)) + bytes(8)
