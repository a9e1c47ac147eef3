"""Public ACME CAs known by name: their directory URLs, and whether they need External
Account Binding (with where to get the EAB key id and HMAC key).

Where each directory URL was checked (the CA's own page first, then a client as a
cross-check: acme.sh's CA_* constants, lego's https://go-acme.github.io/lego/advanced/caservers/):
- letsencrypt, letsencrypt-staging: https://letsencrypt.org/docs/acme-protocol-updates/
  ("API Endpoints", both) and https://letsencrypt.org/docs/staging-environment/
- zerossl: https://zerossl.com/documentation/acme/ ("ACME Server URL"; EAB from the
  dashboard's Developer section or its API)
- google, google-staging: https://cloud.google.com/certificate-manager/docs/public-ca-tutorial
  (table of production and staging ACME directory URLs; EAB by gcloud, staging keys
  from the preprod endpoint)
- buypass: https://www.buypass.com/products/tls-ssl-certificates/resources-tls-ssl-certificates/products/buypass-go-ssl-technical-information
  (certbot --server); buypass-staging only as acme.sh CA_BUYPASS_TEST and other clients:
  the page's part that names the test host was not readable
- sslcom-rsa, sslcom-ecc:
  https://www.ssl.com/guide/ssl-tls-certificate-issuance-and-revocation-with-acme/
  (Account Key and HMAC Key from the dashboard's api credentials); sslcom-dv-ecc also in
  SSL.com's own acme4j fork (github.com/SSLcom/acme4j, SslComAcmeProvider); both in lego
  (sslcomrsa, sslcomecc) and acme.sh
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
    "(https://zerossl.com/documentation/acme/generate-eab-credentials)."
)
_GOOGLE_EAB = (
    "Run `gcloud publicca external-account-keys create` in a Google Cloud project with the "
    "Public CA API enabled (keyId is the kid, b64MacKey the HMAC key; see "
    "https://cloud.google.com/certificate-manager/docs/public-ca-tutorial)."
)
_GOOGLE_STAGING_EAB = (
    "Create the key against the staging API: `gcloud config set "
    "api_endpoint_overrides/publicca https://preprod-publicca.googleapis.com/`, then "
    "`gcloud publicca external-account-keys create` (see "
    "https://cloud.google.com/certificate-manager/docs/public-ca-tutorial)."
)
_SSLCOM_EAB = (
    "Copy the Account Key (kid) and HMAC Key from the api credentials of your SSL.com "
    "dashboard (https://www.ssl.com/guide/ssl-tls-certificate-issuance-and-revocation-with-acme/)."
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
    CertificateAuthority("buypass", "Buypass Go SSL", "https://api.buypass.com/acme/directory"),
    CertificateAuthority(
        "buypass-staging",
        "Buypass Go SSL (test)",
        "https://api.test4.buypass.no/acme/directory",
        staging=True,
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


def find_ca(name: str) -> CertificateAuthority | None:
    """The catalog entry named ``name`` (case and surrounding space ignored)."""
    wanted = name.strip().lower()
    return next((ca for ca in CATALOG if ca.name == wanted), None)
