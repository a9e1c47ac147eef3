"""Domain names as the broker compares them, and token scopes over them.

Every name inside the broker is absolute, lower-case ASCII (IDNA A-labels) and ends
with a dot: ``"www.example.test."``. Scopes match on label boundaries only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

from broker.errors import InvalidNameError, InvalidValueError

CHALLENGE_LABEL = "_acme-challenge"
MAX_NAME_OCTETS = 253
MAX_LABEL_OCTETS = 63
MAX_VALUE_CHARS = 255

_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_TXT_SAFE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def normalize_name(text: str, *, what: str = "name") -> str:
    """Return ``text`` as an absolute lower-case A-label name, or raise InvalidNameError."""
    raw = text.strip()
    if raw in ("", "."):
        raise InvalidNameError(f"{what} is empty: give a domain such as 'www.example.com'")
    if raw.endswith((".", "\u3002", "\uff0e", "\uff61")):
        raw = raw[:-1]
    labels = [_normalize_label(label, text, what) for label in _IDNA_DOTS.split(raw)]
    name = ".".join(labels)
    if len(name) > MAX_NAME_OCTETS:
        raise InvalidNameError(
            f"{what} {text!r} is {len(name)} octets long: a domain name may have at most "
            f"{MAX_NAME_OCTETS}"
        )
    return name + "."


def _normalize_label(label: str, text: str, what: str) -> str:
    if not label:
        raise InvalidNameError(f"{what} {text!r} has an empty label (two dots in a row?)")
    if label.isascii():
        lowered = label.lower()
        if lowered.startswith("xn--"):
            return _checked_a_label(lowered, text, what)
        if not _ASCII_LABEL.fullmatch(lowered):
            raise InvalidNameError(
                f"{what} {text!r}: label {label!r} may hold only letters, digits, hyphens "
                "and underscores, and may not start or end with a hyphen"
            )
    else:
        try:
            lowered = idna.encode(label, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidNameError(
                f"{what} {text!r}: label {label!r} is not a valid internationalized label ({exc})"
            ) from None
    if len(lowered) > MAX_LABEL_OCTETS:
        raise InvalidNameError(
            f"{what} {text!r}: label {label!r} is {len(lowered)} octets long; "
            f"a label may have at most {MAX_LABEL_OCTETS}"
        )
    return lowered


def _checked_a_label(label: str, text: str, what: str) -> str:
    try:
        round_trip = idna.encode(idna.decode(label)).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidNameError(
            f"{what} {text!r}: {label!r} is not a valid punycode (xn--) label ({exc})"
        ) from None
    if round_trip != label or len(label) > MAX_LABEL_OCTETS:
        raise InvalidNameError(f"{what} {text!r}: {label!r} is not a canonical punycode label")
    return label


def is_subdomain(name: str, parent: str) -> bool:
    """True when ``name`` equals ``parent`` or lies below it (both normalized)."""
    return name == parent or name.endswith("." + parent)


@dataclass(frozen=True, slots=True)
class ChallengeTarget:
    """Where a DNS-01 value goes: ``fqdn`` is ``_acme-challenge.<base>``."""

    base: str
    fqdn: str

    @classmethod
    def from_domain(cls, domain: str) -> ChallengeTarget:
        """``www.example.com`` or ``*.example.com`` (which challenges at the base name)."""
        _, body = _split_wildcard(domain, "domain")
        base = normalize_name(body, what="domain")
        if base.startswith(CHALLENGE_LABEL + "."):
            raise InvalidNameError(
                f"domain {domain!r} already starts with {CHALLENGE_LABEL}: send it as 'fqdn', "
                "or send the certificate's name as 'domain'"
            )
        _check_challenge_room(base, domain, "domain")
        return cls(base=base, fqdn=f"{CHALLENGE_LABEL}.{base}")

    @classmethod
    def from_fqdn(cls, fqdn: str) -> ChallengeTarget:
        """``_acme-challenge.www.example.com.`` as an ACME client computes it."""
        name = normalize_name(fqdn, what="fqdn")
        first, _, rest = name.partition(".")
        if first != CHALLENGE_LABEL or not rest:
            raise InvalidNameError(
                f"fqdn {fqdn!r} must start with '{CHALLENGE_LABEL}.' followed by the domain "
                "being validated, e.g. '_acme-challenge.www.example.com.'"
            )
        return cls(base=rest, fqdn=name)


@dataclass(frozen=True, slots=True)
class Scope:
    """One domain pattern of a token.

    ``example.com`` covers exactly the challenge for ``example.com`` (and so for
    ``*.example.com``, which challenges at the same name); ``*.example.com`` covers
    every name strictly below ``example.com``, at any depth.
    """

    base: str
    below: bool

    @classmethod
    def parse(cls, pattern: str) -> Scope:
        below, body = _split_wildcard(pattern, "scope")
        base = normalize_name(body, what="scope")
        _check_challenge_room(base, pattern, "scope", below=below)
        return cls(base=base, below=below)

    def covers(self, base: str) -> bool:
        if self.below:
            return base.endswith("." + self.base)
        return base == self.base

    def __str__(self) -> str:
        text = self.base[:-1]
        return f"*.{text}" if self.below else text


MAX_BASE_OCTETS = MAX_NAME_OCTETS - len(CHALLENGE_LABEL) - 1
"""The longest name whose challenge name ``_acme-challenge.<name>`` is still a name."""


def _check_challenge_room(base: str, text: str, what: str, *, below: bool = False) -> None:
    """Refuse a name too long to carry ``_acme-challenge.`` in front (with ``below``: a
    scope, which also needs room for one more label)."""
    limit = MAX_BASE_OCTETS - (2 if below else 0)
    length = len(base) - 1
    if length > limit:
        raise InvalidNameError(
            f"{what} {text!r} is {length} octets long: its challenge name "
            f"'{CHALLENGE_LABEL}.{'x.' if below else ''}…' would exceed {MAX_NAME_OCTETS} octets; "
            f"a {'wildcard scope' if below else 'name'} may have at most {limit}"
        )


def _split_wildcard(text: str, what: str) -> tuple[bool, str]:
    """(whether ``text`` starts with the ``*.`` label, the name after it)."""
    stripped = text.strip()
    wildcard = stripped.startswith("*.")
    body = stripped[2:] if wildcard else stripped
    if "*" in body:
        raise InvalidNameError(
            f"{what} {text!r}: '*' is allowed only as the whole first label ('*.example.com')"
        )
    return wildcard, body


def validate_value(value: str) -> str:
    """A TXT value must be 1..255 printable ASCII characters, no space, quote or backslash."""
    if not value:
        raise InvalidValueError("value is empty: send the 43-character DNS-01 digest")
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidValueError(
            f"value is {len(value)} characters long; a TXT value may have at most {MAX_VALUE_CHARS}"
        )
    if not _TXT_SAFE.fullmatch(value):
        raise InvalidValueError(
            "value may hold only printable ASCII without spaces, quotes or backslashes "
            "(a DNS-01 digest is base64url: A-Z a-z 0-9 - _)"
        )
    return value
