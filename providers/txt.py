"""TXT record data in presentation form, as Route53 and Cloud DNS take and return it.

One value is one or more quoted character-strings (at most 255 octets each, so longer
values are split): ``"abc"`` or ``"first 255 octets" "the rest"``. Inside quotes ``"``
and ``\\`` are escaped with a backslash, other octets outside printable ASCII as
``\\DDD``. RFC 1035 reads DDD as decimal; Route53 documents octal, so each API says
which it uses. Parsing accepts unquoted words too, as the APIs return what other
tools wrote.
"""

from __future__ import annotations

from typing import Literal

MAX_STRING_OCTETS = 255

Base = Literal[8, 10]


def quote_txt(value: str, *, base: Base = 10) -> str:
    """``value`` (UTF-8) as quoted character-strings."""
    data = value.encode("utf-8")
    chunks = [data[i : i + MAX_STRING_OCTETS] for i in range(0, len(data), MAX_STRING_OCTETS)]
    return " ".join(_quote_chunk(chunk, base) for chunk in chunks or [b""])


def _quote_chunk(chunk: bytes, base: Base) -> str:
    out = ['"']
    for octet in chunk:
        if octet in (0x22, 0x5C):
            out.append("\\" + chr(octet))
        elif 0x20 <= octet < 0x7F:
            out.append(chr(octet))
        else:
            out.append("\\" + (f"{octet:03o}" if base == 8 else f"{octet:03d}"))
    out.append('"')
    return "".join(out)


def parse_txt(text: str, *, base: Base = 10) -> str:
    """The value of one TXT record in presentation form (its strings joined)."""
    data = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        quoted = char == '"'
        i += 1 if quoted else 0
        while i < n and (text[i] != '"' if quoted else not text[i].isspace()):
            if text[i] == "\\" and i + 1 < n:
                i = _unescape(text, i + 1, data, base)
            else:
                data.extend(text[i].encode("utf-8"))
                i += 1
        i += 1 if quoted else 0
    return data.decode("utf-8", errors="replace")


def _unescape(text: str, i: int, data: bytearray, base: Base) -> int:
    digits = text[i : i + 3]
    allowed = "01234567" if base == 8 else "0123456789"
    if len(digits) == 3 and all(digit in allowed for digit in digits):
        data.append(int(digits, base) & 0xFF)
        return i + 3
    data.extend(text[i].encode("utf-8"))
    return i + 1
