"""When to renew: ACME Renewal Information (RFC 9773) when the CA offers it, else once
a third of the certificate's lifetime is left."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from broker.acme.client import AcmeClient
from broker.acme.csr import load_certificate
from broker.acme.errors import AcmeError
from broker.acme.jws import b64url
from broker.acme.messages import RenewalInfo

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 6 * 3600.0
MIN_RETRY_AFTER = 60.0
MAX_RETRY_AFTER = 24 * 3600.0

CertificateInput = x509.Certificate | bytes | str


def _serial_der_bytes(serial: int) -> bytes:
    """The content octets of the DER INTEGER (a leading 0 keeps it positive)."""
    return serial.to_bytes((serial.bit_length() + 8) // 8, "big")


def ari_certificate_id(certificate: CertificateInput) -> str:
    """RFC 9773 4.1: base64url(AKI keyIdentifier) "." base64url(serial number octets)."""
    cert = load_certificate(certificate)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AcmeError("the certificate has no Authority Key Identifier; no ARI id") from None
    if aki.key_identifier is None:
        raise AcmeError("the certificate's Authority Key Identifier has no keyIdentifier")
    return f"{b64url(aki.key_identifier)}.{b64url(_serial_der_bytes(cert.serial_number))}"


@dataclass(frozen=True, slots=True)
class RenewalDecision:
    """``due``: renew now. ``at``: the chosen renewal time. ``retry_after``: seconds until
    renewal information should be fetched again (ARI only)."""

    due: bool
    at: datetime
    reason: str
    retry_after: float | None = None
    explanation_url: str | None = None


def clamp_retry_after(seconds: float | None) -> float:
    """RFC 9773 4.3.3: check again after Retry-After, kept within one minute and one day."""
    if seconds is None:
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def one_third_rule(
    certificate: CertificateInput, *, now: datetime | None = None, within: float = 0.0
) -> RenewalDecision:
    """Renew once a third of the lifetime is left (day 60 of a 90-day certificate)."""
    cert = load_certificate(certificate)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    at = end - (end - start) / 3
    moment = now or datetime.now(UTC)
    return RenewalDecision(
        due=at <= moment + timedelta(seconds=within),
        at=at,
        reason=f"one third of the lifetime left (expires {end:%Y-%m-%d %H:%M} UTC)",
    )


def decide_from_window(
    info: RenewalInfo,
    *,
    now: datetime | None = None,
    within: float = 0.0,
    rng: random.Random | None = None,
) -> RenewalDecision:
    """RFC 9773 4.2: a uniformly random time in the window; due once it has come (or
    comes within ``within`` seconds, the caller's next wake-up)."""
    moment = now or datetime.now(UTC)
    span = (info.end - info.start).total_seconds()
    at = info.start + timedelta(seconds=(rng or random.SystemRandom()).uniform(0, span))
    if info.end <= moment:
        at = moment
    return RenewalDecision(
        due=at <= moment + timedelta(seconds=within),
        at=at,
        reason=f"renewalInfo window {info.start:%Y-%m-%d %H:%M} to {info.end:%Y-%m-%d %H:%M} UTC",
        retry_after=clamp_retry_after(info.retry_after),
        explanation_url=info.explanation_url,
    )


async def renewal_due(
    certificate: CertificateInput,
    client: AcmeClient,
    *,
    now: datetime | None = None,
    within: float = 0.0,
    rng: random.Random | None = None,
) -> RenewalDecision:
    """Whether to renew now, by the CA's renewal information when its directory offers
    ``renewalInfo``, else (or when that fails) by the one-third rule."""
    cert = load_certificate(certificate)
    directory = await client.directory()
    if directory.renewal_info is None:
        return one_third_rule(cert, now=now, within=within)
    try:
        info = await client.renewal_info(ari_certificate_id(cert))
    except AcmeError as exc:
        log.warning("renewal information unavailable (%s); using the one-third rule", exc)
        fallback = one_third_rule(cert, now=now, within=within)
        return RenewalDecision(
            fallback.due, fallback.at, f"{fallback.reason}; renewalInfo failed: {exc}"
        )
    return decide_from_window(info, now=now, within=within, rng=rng)
