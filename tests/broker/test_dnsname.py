"""Name normalisation and the scope matrix."""

from __future__ import annotations

import pytest

from broker.dnsname import ChallengeTarget, Scope, normalize_name, validate_value
from broker.errors import InvalidNameError, InvalidValueError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", "example.com."),
        ("Example.COM.", "example.com."),
        ("  www.example.com ", "www.example.com."),
        ("bücher.example", "xn--bcher-kva.example."),
        ("BÜCHER.example", "xn--bcher-kva.example."),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example."),
        ("_acme-challenge.example.com", "_acme-challenge.example.com."),
        ("a" * 63 + ".com", "a" * 63 + ".com."),
        ("例え。テスト", "xn--r8jz45g.xn--zckzah."),
    ],
)
def test_names_are_normalized_to_lower_case_a_labels_with_a_trailing_dot(text, expected):
    assert normalize_name(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "empty label"),
        (".a.b", "empty label"),
        ("a" * 64 + ".com", "at most 63"),
        (".".join(["a" * 60] * 5), "at most 253"),
        ("exa mple.com", "letters, digits"),
        ("-lead.example.com", "hyphen"),
        ("trail-.example.com", "hyphen"),
        ("semi;colon.com", "letters, digits"),
        ("xn--zz-.example", "punycode"),
        ("xn--bcher-kva-not.example", "punycode"),
        ("a\x00b.com", "letters, digits"),
    ],
)
def test_invalid_names_are_refused_with_a_reason(text, fragment):
    with pytest.raises(InvalidNameError, match=fragment):
        normalize_name(text)


def test_wildcard_domain_challenges_at_its_base_name():
    target = ChallengeTarget.from_domain("*.Example.com")
    assert (target.base, target.fqdn) == ("example.com.", "_acme-challenge.example.com.")


@pytest.mark.parametrize("domain", ["*.*.example.com", "a.*.example.com", "*example.com", "*"])
def test_wildcard_anywhere_but_the_first_whole_label_is_refused(domain):
    with pytest.raises(InvalidNameError):
        ChallengeTarget.from_domain(domain)


def test_fqdn_must_be_a_challenge_name():
    assert ChallengeTarget.from_fqdn("_acme-challenge.a.b.").base == "a.b."
    with pytest.raises(InvalidNameError, match="_acme-challenge"):
        ChallengeTarget.from_fqdn("www.example.com.")
    with pytest.raises(InvalidNameError):
        ChallengeTarget.from_fqdn("_acme-challenge.")


@pytest.mark.parametrize("domain_of", [lambda n: n, lambda n: f"*.{n}", lambda n: f"{n}."])
def test_a_domain_is_refused_when_its_challenge_name_would_be_too_long(domain_of):
    longest = "a" * 61 + "." + "b" * 61 + "." + "c" * 61 + "." + "d" * 51
    assert len(longest) == 237
    target = ChallengeTarget.from_domain(domain_of(longest))
    assert len(target.fqdn) == 254  # 253 octets and the trailing dot
    with pytest.raises(InvalidNameError, match="challenge name") as caught:
        ChallengeTarget.from_domain(domain_of(longest + "d"))
    assert "at most 237" in caught.value.detail


def test_a_scope_leaves_room_for_its_challenge_name():
    exact = "a" * 61 + "." + "b" * 61 + "." + "c" * 61 + "." + "d" * 51
    assert str(Scope.parse(exact)) == exact
    with pytest.raises(InvalidNameError, match="at most 237"):
        Scope.parse(exact + "d")
    below = exact[:-2]
    assert str(Scope.parse("*." + below)) == "*." + below
    with pytest.raises(InvalidNameError, match="wildcard scope may have at most 235"):
        Scope.parse("*." + below + "d")


def test_domain_that_is_already_a_challenge_name_is_refused_with_a_hint():
    with pytest.raises(InvalidNameError, match="send it as 'fqdn'"):
        ChallengeTarget.from_domain("_acme-challenge.example.com")


# (scope pattern, certificate domain, covered?)
SCOPE_MATRIX = [
    ("example.test", "example.test", True),
    ("example.test", "*.example.test", True),
    ("example.test", "www.example.test", False),
    ("example.test", "a.notexample.test", False),
    ("example.test", "notexample.test", False),
    ("example.test", "EXAMPLE.TEST.", True),
    ("Example.Test.", "example.test", True),
    ("*.example.test", "www.example.test", True),
    ("*.example.test", "a.b.c.example.test", True),
    ("*.example.test", "*.www.example.test", True),
    ("*.example.test", "example.test", False),
    ("*.example.test", "*.example.test", False),
    ("*.example.test", "www.notexample.test", False),
    ("*.example.test", "wwwexample.test", False),
    ("*.example.test", "WWW.EXAMPLE.TEST", True),
    ("www.example.test", "www.example.test", True),
    ("www.example.test", "a.www.example.test", False),
    ("*.bücher.example", "shop.xn--bcher-kva.example", True),
    ("xn--bcher-kva.example", "BÜCHER.example", True),
    ("bücher.example", "bucher.example", False),
]


@pytest.mark.parametrize(("pattern", "domain", "covered"), SCOPE_MATRIX)
def test_scope_matrix(pattern, domain, covered):
    target = ChallengeTarget.from_domain(domain)
    assert Scope.parse(pattern).covers(target.base) is covered


@pytest.mark.parametrize("pattern", ["*", "**.example.com", "a.*.example.com", "*.", ""])
def test_malformed_scopes_are_refused(pattern):
    with pytest.raises(InvalidNameError):
        Scope.parse(pattern)


def test_scope_prints_in_its_canonical_form():
    assert str(Scope.parse("*.Example.COM.")) == "*.example.com"
    assert str(Scope.parse("bücher.example")) == "xn--bcher-kva.example"


@pytest.mark.parametrize("value", ["a", "x" * 255, "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"])
def test_valid_values(value):
    assert validate_value(value) == value


@pytest.mark.parametrize(
    "value", ["", "x" * 256, "has space", 'quo"te', "back\\slash", "tab\t", "é", "new\nline"]
)
def test_invalid_values_are_refused(value):
    with pytest.raises(InvalidValueError):
        validate_value(value)
