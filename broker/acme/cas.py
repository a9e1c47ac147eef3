"""Public ACME CAs known by name: their directory URLs, and whether they need External
Account Binding (with where to get the EAB key id and HMAC key).

Each directory URL, and the page it was checked against (December 2026 copies):
- letsencrypt, letsencrypt-staging: https://letsencrypt.org/docs/acme-protocol-updates/
  ("API Endpoints", production and staging) and
  https://letsencrypt.org/docs/staging-environment/ (the staging URL).
- zerossl: https://zerossl.com/documentation/acme/ ("ACME Server URL"; EAB from the
  Developer section of the dashboard or https://zerossl.com/documentation/acme/generate-eab-credentials).
- google, google-staging:
  https://docs.cloud.google.com/certificate-manager/docs/public-ca-tutorial (the table of
  ACME directory URLs for the production and staging environments; EAB secrets by
  ``gcloud publicca external-account-keys create``, for staging after pointing gcloud at
  preprod-publicca.googleapis.com; one secret per account, used within 7 days).
- sslcom-rsa, sslcom-ecc:
  https://www.ssl.com/guide/ssl-tls-certificate-issuance-and-revocation-with-acme/ (the
  Account Key and HMAC Key under "api credentials" of the dashboard). The stored copy of
  that guide breaks off before its certbot commands, so the URLs were checked against
  SSL.com's own acme4j fork (github.com/SSLcom/acme4j, SslComAcmeProvider:
  sslcom-dv-ecc) and copies of the guide's certbot command (sslcom-dv-rsa); lego and
  acme.sh list both.

Left out: Buypass (buypass, buypass-staging). Buypass ended its TLS/SSL certificate
service, Go SSL (ACME) included: no orders after 15 October 2025, last issuance
31 October 2025 (Buypass's notice to ACME account contacts, quoted in acme.sh issue
#6480; https://www.buypass.com/products/tls-ssl-certificates/go-ssl: "TLS/SSL
certificates can no longer be ordered, renewed, or replaced"). Its older "Go SSL -
Technical information" page still shows https://api.buypass.com/acme/directory, but
nothing can be ordered there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    name: str
    title: str
    directory: str
    staging: bool = False
    eab_required: bool = False
    eab_help: str = ""
    """How to get an EAB key id and HMAC key (set exactly where ``eab_required``)."""


_ZEROSSL_EAB = (
    "Generate EAB credentials in the Developer section of the ZeroSSL dashboard "
    "(https://app.zerossl.com/developer) or through its API "
    "(https://zerossl.com/documentation/acme/generate-eab-credentials); they are reusable."
)
_GOOGLE_EAB = (
    "Run `gcloud publicca external-account-keys create` in a Google Cloud project with the "
    "Public CA API enabled: keyId is the key id, b64MacKey the HMAC key. One key registers "
    "one account and must be used within 7 days (see "
    "https://docs.cloud.google.com/certificate-manager/docs/public-ca-tutorial)."
)
_GOOGLE_STAGING_EAB = (
    "Staging has its own keys: `gcloud config set api_endpoint_overrides/publicca "
    "https://preprod-publicca.googleapis.com/`, then `gcloud publicca "
    "external-account-keys create` (keyId, b64MacKey), then `gcloud config unset "
    "api_endpoint_overrides/publicca` (see "
    "https://docs.cloud.google.com/certificate-manager/docs/public-ca-tutorial#staging)."
)
_SSLCOM_EAB = (
    "Copy the Account Key (the key id) and the HMAC Key from API Credentials on the "
    "Dashboard of your SSL.com account (see "
    "https://www.ssl.com/guide/ssl-tls-certificate-issuance-and-revocation-with-acme/)."
)

CATALOG: tuple[CertificateAuthority, ...] = (
    CertificateAuthority(
        "letsencrypt", "Let's Encrypt", "https://acme-v02.api.letsencrypt.org/directory"
    ),
    CertificateAuthority(
        "letsencrypt-staging",
        "Let's Encrypt (staging)",
        "https://acme-staging-v02.api.letsencrypt.org/directory",
        staging=True,
    ),
    CertificateAuthority(
        "zerossl",
        "ZeroSSL",
        "https://acme.zerossl.com/v2/DV90",
        eab_required=True,
        eab_help=_ZEROSSL_EAB,
    ),
    CertificateAuthority(
        "google",
        "Google Trust Services",
        "https://dv.acme-v02.api.pki.goog/directory",
        eab_required=True,
        eab_help=_GOOGLE_EAB,
    ),
    CertificateAuthority(
        "google-staging",
        "Google Trust Services (staging)",
        "https://dv.acme-v02.test-api.pki.goog/directory",
        staging=True,
        eab_required=True,
        eab_help=_GOOGLE_STAGING_EAB,
    ),
    CertificateAuthority(
        "sslcom-rsa",
        "SSL.com (RSA)",
        "https://acme.ssl.com/sslcom-dv-rsa",
        eab_required=True,
        eab_help=_SSLCOM_EAB,
    ),
    CertificateAuthority(
        "sslcom-ecc",
        "SSL.com (ECDSA)",
        "https://acme.ssl.com/sslcom-dv-ecc",
        eab_required=True,
        eab_help=_SSLCOM_EAB,
    ),
)


def find_ca(name: str) -> CertificateAuthority:
    """The catalog entry named ``name`` (case and surrounding space ignored); a
    ValueError naming every known CA when there is none."""
    wanted = name.strip().lower()
    for ca in CATALOG:
        if ca.name == wanted:
            return ca
    known = ", ".join(ca.name for ca in CATALOG)
    raise ValueError(f"no CA named {name!r} in the catalog; known CAs: {known}")
