"""The catalog of public ACME CAs: unique names, https directories, EAB help exactly
where EAB is required, no CA that stopped offering ACME, and lookup by name."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from broker.acme import CATALOG, CertificateAuthority, find_ca


def test_catalog_lists_the_known_cas_in_order():
    assert [ca.name for ca in CATALOG] == [
        "letsencrypt",
        "letsencrypt-staging",
        "zerossl",
        "google",
        "google-staging",
        "sslcom-rsa",
        "sslcom-ecc",
    ]


def test_buypass_is_left_out_since_its_acme_service_ended():
    assert not [ca for ca in CATALOG if "buypass" in ca.name or "buypass" in ca.directory]
    with pytest.raises(ValueError, match="no CA named 'buypass'"):
        find_ca("buypass")


def test_names_and_directories_are_unique():
    assert len({ca.name for ca in CATALOG}) == len(CATALOG)
    assert len({ca.directory for ca in CATALOG}) == len(CATALOG)


def test_every_directory_is_an_https_url_with_a_host():
    for ca in CATALOG:
        parts = urlsplit(ca.directory)
        assert (parts.scheme, bool(parts.netloc)) == ("https", True), ca.name
        assert ca.title, ca.name


def test_eab_help_is_given_exactly_where_eab_is_required():
    for ca in CATALOG:
        assert bool(ca.eab_help.strip()) == ca.eab_required, ca.name
        if ca.eab_required:
            assert "https://" in ca.eab_help, ca.name
    assert {ca.name for ca in CATALOG if ca.eab_required} == {
        "zerossl",
        "google",
        "google-staging",
        "sslcom-rsa",
        "sslcom-ecc",
    }
    assert "app.zerossl.com/developer" in find_ca("zerossl").eab_help
    assert "gcloud publicca external-account-keys create" in find_ca("google").eab_help
    assert "preprod-publicca.googleapis.com" in find_ca("google-staging").eab_help
    assert "API Credentials" in find_ca("sslcom-ecc").eab_help


def test_staging_entries_are_marked():
    assert {ca.name for ca in CATALOG if ca.staging} == {"letsencrypt-staging", "google-staging"}


def test_find_ca_by_name_ignoring_case_and_space():
    letsencrypt = find_ca("letsencrypt")
    assert isinstance(letsencrypt, CertificateAuthority)
    assert letsencrypt.directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert find_ca(" ZeroSSL ") is CATALOG[2]
    assert find_ca("google-staging").directory == "https://dv.acme-v02.test-api.pki.goog/directory"


@pytest.mark.parametrize("name", ["letsencrypt-test", "", "https://acme.zerossl.com/v2/DV90"])
def test_an_unknown_name_is_a_value_error_listing_the_known_ones(name: str):
    with pytest.raises(ValueError) as unknown:
        find_ca(name)
    message = str(unknown.value)
    assert f"no CA named {name!r}" in message
    assert all(ca.name in message for ca in CATALOG)
