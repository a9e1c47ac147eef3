"""broker.persist: the grant's value built from checked parts, and read back strictly as
an RFC 8659 issue-value."""

from __future__ import annotations

import pytest

from broker.errors import InvalidRequestError
from broker.persist import IssueValueError, PersistGrant, grant_target, parse_issue_value

NOW = 1_800_000_000.0
URI = "https://acme.example.net/acme/acct/1"


def test_value_has_the_parameters_in_one_order_and_reads_back():
    grant = PersistGrant.build("CA.Example.net.", URI, True, 1_900_000_000, now=NOW)
    assert grant.value() == f"ca.example.net; accounturi={URI}; policy=wildcard; " + (
        "persistUntil=1900000000"
    )
    assert PersistGrant.parse(grant.value()) == grant
    assert grant.expires_at == 1_900_000_000.0


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidRequestError) as raised:
        PersistGrant.build("x;y", "http://a/b", persist_until=1, now=NOW)
    assert [p.pointer for p in raised.value.problems] == [
        "/issuer",
        "/account_uri",
        "/persist_until",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "ca.example.net; accounturi=a; accounturi=b",
        "ca.example.net; accounturi",
        "ca.example.net; account uri=x",
        "ca.example.net; accounturi=a b",
        "ca_example.net; accounturi=x",
        "ca.example.net; -tag=x",
    ],
)
def test_strict_parser_refuses_what_is_no_single_reading_issue_value(text: str):
    with pytest.raises(IssueValueError):
        parse_issue_value(text)


def test_strict_parser_takes_rfc8659_whitespace_and_empty_parameters():
    assert parse_issue_value("  ca.example.net ;  accounturi = x  ") == (
        "ca.example.net",
        {"accounturi": "x"},
    )
    assert parse_issue_value(";") == (None, {})


@pytest.mark.parametrize(
    "text", ["ca.example.net", "ca.example.net; accounturi=x; policy=other", "; accounturi=x"]
)
def test_a_grant_needs_an_issuer_an_account_and_a_known_policy(text: str):
    with pytest.raises(IssueValueError):
        PersistGrant.parse(text)


def test_grant_name_of_a_wildcard_is_the_base_name():
    assert grant_target("*.Example.test").fqdn == "_validation-persist.example.test."
