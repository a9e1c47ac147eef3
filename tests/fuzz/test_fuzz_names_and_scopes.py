"""Fuzzing name normalisation (broker.dnsname) and scope checks (broker.auth).

Properties: normalising is idempotent and yields an absolute, lower-case A-label name
that dnspython accepts; bad input raises InvalidNameError (a ValueError), never anything
else; a scope covers a name exactly when dnspython's label-wise comparison says it lies
at (plain scope) or strictly below (``*.`` scope) the scope's base, so a name that only
shares a suffix of characters (``notexample.com`` and ``example.com``) is never covered.
"""

from __future__ import annotations

import contextlib

import dns.name
from hypothesis import assume, example, given
from hypothesis import strategies as st

from broker.auth import Principal, client_address, parse_cidrs, validate_token_name
from broker.dnsname import (
    CHALLENGE_LABEL,
    MAX_LABEL_OCTETS,
    MAX_NAME_OCTETS,
    ChallengeTarget,
    Scope,
    is_subdomain,
    normalize_name,
)
from broker.errors import (
    ForbiddenNameError,
    InvalidNameError,
    InvalidRequestError,
)
from tests.fuzz.budget import FUZZ

# Characters that make names interesting: ASCII letters of both cases, digits, the
# separators IDNA knows, hyphens, underscores, a few non-ASCII letters, marks and
# look-alikes that UTS 46 maps (fullwidth, ligatures, "⒈" = "1."), spaces and stars.
NAME_CHARS = (
    "abcxyzABCXYZ0129-_..*"
    "\u3002\uff0e\uff61"  # ideographic, fullwidth, halfwidth full stops
    "äöüßéçñÅİıσςΣ中文日本語ﬁ①⒈\u0301\u200d\u00ad "
    "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45"  # fullwidth "example"
)
labels = st.one_of(
    st.text(alphabet=NAME_CHARS, min_size=0, max_size=20),
    st.from_regex(r"xn--[a-z0-9-]{1,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", fullmatch=True),
)
name_texts = st.one_of(
    st.lists(labels, min_size=1, max_size=6).map(".".join),
    st.lists(labels, min_size=1, max_size=6).map(lambda parts: ".".join(parts) + "."),
    st.text(max_size=80),
)
valid_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
valid_names = st.lists(valid_labels, min_size=1, max_size=5).map(lambda p: ".".join(p) + ".")


def dns_name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


@FUZZ
@given(name_texts)
@example("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com")  # fullwidth
@example("a⒈b.example")
@example("xn--nxasmq6b.example")
@example("." * 3)
@example("a" * 64 + ".com")
def test_normalising_is_idempotent_and_yields_a_valid_absolute_name(text: str) -> None:
    try:
        name = normalize_name(text)
    except InvalidNameError:
        return
    assert normalize_name(name) == name
    assert name.endswith(".")
    assert name != "."
    assert name.isascii()
    assert name == name.lower()
    assert len(name) - 1 <= MAX_NAME_OCTETS
    assert all(1 <= len(label) <= MAX_LABEL_OCTETS for label in name[:-1].split("."))
    assert dns_name(name).to_text() == name


@FUZZ
@given(name_texts)
def test_challenge_targets_round_trip_or_raise_invalid_name(text: str) -> None:
    for parse in (ChallengeTarget.from_domain, ChallengeTarget.from_fqdn):
        try:
            target = parse(text)
        except InvalidNameError:  # a ValueError too
            continue
        assert target.fqdn == f"{CHALLENGE_LABEL}.{target.base}"
        assert len(target.fqdn) - 1 <= MAX_NAME_OCTETS
        assert ChallengeTarget.from_fqdn(target.fqdn) == target
        dns_name(target.fqdn)


@FUZZ
@given(st.one_of(name_texts, name_texts.map(lambda text: "*." + text)))
def test_scopes_parse_to_a_canonical_form_or_raise_invalid_name(pattern: str) -> None:
    try:
        scope = Scope.parse(pattern)
    except InvalidNameError:
        return
    assert Scope.parse(str(scope)) == scope
    assert scope.base == normalize_name(scope.base)


def oracle_covers(scope: Scope, base: str) -> bool:
    """Label-wise, by dnspython: at the base (plain scope) or strictly below (``*.``)."""
    name, parent = dns_name(base), dns_name(scope.base)
    if scope.below:
        return name.is_subdomain(parent) and name != parent
    return name == parent


@st.composite
def scope_and_name(draw: st.DrawFn) -> tuple[Scope, str]:
    """A scope and a name near it: the base itself, below it, beside it, glued to it
    without a dot (``notexample.com``), or unrelated."""
    base = draw(valid_names)
    scope = Scope(base=base, below=draw(st.booleans()))
    prefix = draw(valid_labels)
    name = draw(
        st.sampled_from(
            [
                base,
                f"{prefix}.{base}",
                f"{prefix}.{draw(valid_labels)}.{base}",
                f"{prefix}{base}",
                f"{prefix}-{base}",
                base.split(".", 1)[1] or base,
                draw(valid_names),
            ]
        )
    )
    assume(len(name) - 1 <= MAX_NAME_OCTETS)
    return scope, name


@FUZZ
@given(scope_and_name())
@example((Scope("example.com.", below=False), "notexample.com."))
@example((Scope("example.com.", below=True), "notexample.com."))
@example((Scope("example.com.", below=True), "example.com."))
@example((Scope("com.", below=True), "example.com."))
def test_a_scope_covers_a_name_only_on_a_label_boundary(case: tuple[Scope, str]) -> None:
    scope, name = case
    covered = scope.covers(name)
    assert covered == oracle_covers(scope, name)
    if covered and name != scope.base:
        assert name[: -len(scope.base)].endswith(".")
    assert is_subdomain(name, scope.base) == dns_name(name).is_subdomain(dns_name(scope.base))


@FUZZ
@given(st.lists(scope_and_name(), min_size=1, max_size=4))
def test_a_principal_may_challenge_exactly_what_one_of_its_scopes_covers(
    cases: list[tuple[Scope, str]],
) -> None:
    scopes = tuple(scope for scope, _ in cases)
    principal = Principal(name="fuzz", scopes=scopes, admin=False)
    for _, name in cases:
        allowed = any(oracle_covers(scope, name) for scope in scopes)
        assert principal.may_challenge(name) == allowed
        fqdn = f"{CHALLENGE_LABEL}.{name}"
        if allowed:
            principal.require_challenge(name, fqdn)
        else:
            try:
                principal.require_challenge(name, fqdn)
            except ForbiddenNameError:
                pass
            else:
                raise AssertionError(f"{name} was let through by {scopes}")


@FUZZ
@given(st.lists(name_texts.map(lambda t: "*." + t) | name_texts, max_size=3), valid_names)
def test_uncovered_names_raise_only_invalid_name(patterns: list[str], name: str) -> None:
    scopes = []
    for pattern in patterns:
        try:
            scopes.append(Scope.parse(pattern))
        except InvalidNameError:
            continue
    principal = Principal(name="fuzz", scopes=tuple(scopes), admin=False)
    for domain in (name, "*." + name, *patterns):
        try:
            uncovered = principal.uncovered([domain])
        except InvalidNameError:
            continue
        base = ChallengeTarget.from_domain(domain).base
        assert (uncovered == []) == any(oracle_covers(s, base) for s in scopes)


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=60)), st.one_of(st.none(), st.text(max_size=80)))
@example("10.0.0.1", "192.0.2.7, 10.0.0.2")
@example("::ffff:10.0.0.1", "garbage, 192.0.2.7")
@example("fe80::1%eth0", "")
def test_client_address_never_raises(peer: str | None, forwarded: str | None) -> None:
    trusted = parse_cidrs(["10.0.0.0/8", "::ffff:10.0.0.0/104"])
    address = client_address(peer, forwarded, trusted)
    assert address is None or address.version in (4, 6)
    if address is not None and address.version == 6:
        assert address.ipv4_mapped is None


@FUZZ
@given(st.lists(st.text(max_size=45), max_size=3), st.text(max_size=70))
def test_cidrs_and_token_names_raise_only_invalid_request(cidrs: list[str], name: str) -> None:
    with contextlib.suppress(InvalidRequestError):
        parse_cidrs(cidrs)
    try:
        assert validate_token_name(name) == name
    except InvalidRequestError:
        return
    dns_name(name + ".")  # a token's name is also its TSIG key's name
