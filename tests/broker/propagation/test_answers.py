"""Reading responses: TXT joining, CNAME chains in answers, lame servers, negative TTLs."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from broker.propagation.report import ServerState, describe_lacking, is_ready
from broker.propagation.wire import follow_answer, lame_reason, negative_ttl, txt_values

NAME = dns.name.from_text("_acme-challenge.example.test.")


def response(text: str) -> dns.message.Message:
    return dns.message.from_text(text)


def test_txt_is_found_through_a_cname_chain_in_the_answer() -> None:
    message = response(
        """id 1
opcode QUERY
rcode NOERROR
flags QR AA
;QUESTION
_acme-challenge.example.test. IN TXT
;ANSWER
_acme-challenge.example.test. 60 IN CNAME a.example.test.
a.example.test. 60 IN CNAME b.example.test.
b.example.test. 60 IN TXT "one" "two"
b.example.test. 60 IN TXT "three"
"""
    )
    end, rrset = follow_answer(message, NAME, dns.rdatatype.TXT)
    assert end == dns.name.from_text("b.example.test.")
    assert txt_values(rrset) == (b"onetwo", b"three")


def test_a_cname_loop_in_the_answer_ends_without_a_txt() -> None:
    message = response(
        """id 1
opcode QUERY
rcode NOERROR
flags QR AA
;QUESTION
_acme-challenge.example.test. IN TXT
;ANSWER
_acme-challenge.example.test. 60 IN CNAME a.example.test.
a.example.test. 60 IN CNAME _acme-challenge.example.test.
"""
    )
    assert follow_answer(message, NAME, dns.rdatatype.TXT)[1] is None


def test_records_for_other_names_are_not_taken_for_the_answer() -> None:
    message = response(
        """id 1
opcode QUERY
rcode NOERROR
flags QR AA
;QUESTION
_acme-challenge.example.test. IN TXT
;ANSWER
elsewhere.example.test. 60 IN TXT "value"
"""
    )
    assert txt_values(follow_answer(message, NAME, dns.rdatatype.TXT)[1]) == ()


def test_lame_answers_say_why() -> None:
    refused = response("id 1\nopcode QUERY\nrcode REFUSED\nflags QR\n")
    not_aa = response("id 1\nopcode QUERY\nrcode NOERROR\nflags QR\n")
    referral = response(
        "id 1\nopcode QUERY\nrcode NOERROR\nflags QR\n;AUTHORITY\nexample.test. 60 IN NS ns1.\n"
    )
    nxdomain = response("id 1\nopcode QUERY\nrcode NXDOMAIN\nflags QR AA\n")
    assert lame_reason(refused) == "REFUSED"
    assert lame_reason(not_aa) == "not authoritative (AA not set)"
    assert lame_reason(referral) == "not authoritative (referral to example.test.)"
    assert lame_reason(nxdomain) is None


def test_negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() -> None:
    low_minimum = response(
        "id 1\nopcode QUERY\nrcode NXDOMAIN\nflags QR RA\n;AUTHORITY\n"
        "example.test. 300 IN SOA ns1. h. 1 3600 600 604800 30\n"
    )
    low_ttl = response(
        "id 1\nopcode QUERY\nrcode NOERROR\nflags QR RA\n;AUTHORITY\n"
        "example.test. 12 IN SOA ns1. h. 1 3600 600 604800 30\n"
    )
    assert negative_ttl(low_minimum) == 30
    assert negative_ttl(low_ttl) == 12
    assert negative_ttl(response("id 1\nopcode QUERY\nrcode NXDOMAIN\nflags QR\n")) is None


def state(seen: bool, *, counted: bool = True, error: str | None = None) -> ServerState:
    return ServerState(
        "ns1.example.test.", "192.0.2.1", 53, error is None, seen, error, 1.0, counted
    )


def test_policies_all_and_quorum() -> None:
    assert is_ready([state(True), state(True)], "all")
    assert not is_ready([state(True), state(False)], "all")
    assert not is_ready([state(True), state(False)], "quorum")
    assert is_ready([state(True), state(True), state(False, error="timeout")], "quorum")
    assert not is_ready([], "all")
    assert not is_ready([], "quorum")


def test_addresses_without_a_route_from_here_do_not_count() -> None:
    unroutable = state(False, counted=False, error="UDP Network is unreachable")
    assert is_ready([state(True), unroutable], "all")
    assert not is_ready([unroutable], "all")


def test_lacking_servers_are_described_with_their_reason() -> None:
    text = describe_lacking(
        [
            state(True),
            state(False),
            state(False, error="REFUSED"),
            ServerState("o", "::1", 53, False, False, None, None),
        ]
    )
    assert text == (
        "ns1.example.test. 192.0.2.1:53 (answered without the value), "
        "ns1.example.test. 192.0.2.1:53 (REFUSED), o [::1]:53 (not asked yet)"
    )
