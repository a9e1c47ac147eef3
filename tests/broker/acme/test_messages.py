"""Reading the CA's answers: problem documents, Link and Retry-After headers, resources,
CSRs and chains, RFC 9773 certificate ids and renewal decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from broker.acme import (
    AcmeProblem,
    Authorization,
    BadNonceError,
    KeyType,
    RateLimitedError,
    RenewalInfo,
    Status,
    ari_certificate_id,
    csr_names,
    generate_private_key,
    identifier_for,
    load_csr,
    make_csr,
    one_third_rule,
)
from broker.acme.csr import ParsedChain, choose_chain
from broker.acme.events import Emitter, EventKind
from broker.acme.messages import parse_time
from broker.acme.renewal import DEFAULT_RETRY_AFTER, decide_from_window
from broker.acme.transport import Link, parse_links, parse_retry_after


def test_problem_documents_become_their_subclass_with_every_field():
    problem = AcmeProblem.from_json(
        {
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "slow down",
            "status": 429,
            "instance": "https://ca/limits",
            "identifier": {"type": "dns", "value": "example.test"},
            "subproblems": [{"type": "urn:ietf:params:acme:error:caa", "detail": "CAA"}, "junk"],
        },
        retry_after=30.0,
        url="https://ca/order",
    )
    assert isinstance(problem, RateLimitedError)
    assert (problem.code, problem.status, problem.retry_after) == ("rateLimited", 429, 30.0)
    assert problem.identifier == "example.test"
    assert problem.instance == "https://ca/limits"
    assert [(s.code, s.identifier) for s in problem.subproblems] == [("caa", None)]
    assert isinstance(
        AcmeProblem.from_json({"type": "urn:ietf:params:acme:error:badNonce"}), BadNonceError
    )
    blank = AcmeProblem.from_json({"detail": "?"}, status=500)
    assert type(blank) is AcmeProblem
    assert (blank.type, blank.status) == ("about:blank", 500)
    foreign = AcmeProblem.from_json({"type": "https://example/badNonce"})
    assert type(foreign) is AcmeProblem


def test_link_headers_with_several_links_params_and_relative_targets():
    links = parse_links(
        [
            '<https://ca/cert/1/alternate/1>;rel="alternate", <../dir>; rel=index',
            '<https://ca/cert/1/alternate/2>; title="a, b; c"; rel="alternate next"',
        ],
        "https://ca/cert/1",
    )
    assert links == (
        Link("https://ca/cert/1/alternate/1", "alternate"),
        Link("https://ca/dir", "index"),
        Link("https://ca/cert/1/alternate/2", "alternate"),
        Link("https://ca/cert/1/alternate/2", "next"),
    )
    assert parse_links(["<https://ca/x>"], "https://ca/") == ()


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_timestamps_with_nanoseconds_and_offsets():
    assert parse_time("2026-03-01T10:00:00.123456789Z") == datetime(
        2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_time("2026-03-01T12:00:00+02:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_time("yesterday") is None


def test_wildcard_authorization_names_the_wildcard_and_finds_its_error():
    authorization = Authorization.from_json(
        {
            "status": "invalid",
            "identifier": {"type": "dns", "value": "example.test"},
            "wildcard": True,
            "challenges": [
                {
                    "type": "dns-01",
                    "url": "/chal/1",
                    "status": "invalid",
                    "token": "t",
                    "error": {"type": "urn:ietf:params:acme:error:dns", "detail": "SERVFAIL"},
                }
            ],
        },
        "https://ca/authz/1",
    )
    assert authorization.domain == "*.example.test"
    assert authorization.status is Status.INVALID
    assert authorization.challenges[0].url == "https://ca/chal/1"
    assert authorization.error is not None
    assert authorization.error.code == "dns"
    assert authorization.challenge("http-01") is None


def test_identifiers_are_normalised_and_wildcards_kept():
    assert identifier_for("WWW.Example.TEST.").value == "www.example.test"
    assert identifier_for("*.Bücher.example").value == "*.xn--bcher-kva.example"
    with pytest.raises(ValueError):
        identifier_for("bad..name")


def test_csr_has_every_name_as_san_and_the_first_as_cn_only_if_it_fits():
    key = generate_private_key(KeyType.EC256)
    csr = make_csr(key, ["*.example.test", "example.test"])
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "*.example.test"
    assert csr_names(csr) == ["*.example.test", "example.test"]
    long_name = "a" * 60 + ".example.test"
    long_csr = make_csr(key, [long_name, "example.test"])
    assert long_csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert csr_names(load_csr(long_csr.public_bytes(serialization.Encoding.DER))) == [
        long_name,
        "example.test",
    ]


def certificate(
    *, serial: int = 1, aki: bytes | None = b"k" * 20, issuer: str = "Issuer", days: int = 90
) -> x509.Certificate:
    key = generate_private_key(KeyType.EC256)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(aki, None, None), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_ari_certificate_id_matches_the_rfc_9773_example():
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = certificate(serial=0x87654321, aki=aki)
    assert ari_certificate_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert ari_certificate_id(certificate(serial=0x7F, aki=aki)).endswith(".fw")


def test_one_third_rule_for_a_90_day_certificate_is_day_60():
    cert = certificate()
    decision = one_third_rule(cert, now=datetime(2026, 2, 1, tzinfo=UTC))
    assert decision.at == datetime(2026, 3, 2, tzinfo=UTC)
    assert not decision.due
    assert one_third_rule(cert, now=datetime(2026, 3, 2, tzinfo=UTC)).due


def test_renewal_window_choice_and_retry_after_bounds():
    now = datetime(2026, 2, 1, tzinfo=UTC)
    future = RenewalInfo(now + timedelta(days=1), now + timedelta(days=2), None, None)
    decision = decide_from_window(future, now=now, rng=random.Random(1))
    assert future.start <= decision.at <= future.end
    assert not decision.due
    assert decision.retry_after == DEFAULT_RETRY_AFTER
    assert decide_from_window(future, now=now, within=3 * 86400).due
    past = RenewalInfo(now - timedelta(days=2), now - timedelta(days=1), None, 10.0)
    late = decide_from_window(past, now=now)
    assert (late.due, late.at, late.retry_after) == (True, now, 60.0)


def test_chain_choice_prefers_the_top_issuer_then_any_issuer_then_the_default():
    default = ParsedChain(certificate(issuer="Mid A"), (certificate(issuer="Root A"),))
    other = ParsedChain(certificate(issuer="Mid B"), (certificate(issuer="Root B"),))
    assert choose_chain([default, other], "root b") is other
    assert choose_chain([default, other], "Mid B") is other
    assert choose_chain([default, other], "Root C") is default
    assert choose_chain([default, other], None) is default


def test_a_failing_progress_callback_does_not_stop_the_issuance(
    caplog: pytest.LogCaptureFixture,
):
    def broken(event: object) -> None:
        raise RuntimeError("printer on fire")

    Emitter(broken)(EventKind.FINALIZING, None, "x")
    assert "printer on fire" in caplog.text
