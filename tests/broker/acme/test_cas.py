"""The catalog of public ACME CAs: unique names, https directories, EAB help exactly
where EAB is required, and lookup by name."""

from __future__ import annotations

from urllib.parse import urlsplit

from broker.acme.cas import CATALOG, CertificateAuthority, find_ca


def test_catalog_lists_the_known_cas_in_order():
    assert [ca.name for ca in CATALOG] == [
        "letsencrypt",
        "letsencrypt-staging",
        "zerossl",
        "google",
        "google-staging",
        "buypass",
        "buypass-staging",
        "sslcom-rsa",
        "sslcom-ecc",
    ]


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


def test_staging_entries_are_marked():
    assert {ca.name for ca in CATALOG if ca.staging} == {
        "letsencrypt-staging",
        "google-staging",
        "buypass-staging",
    }


def test_find_ca_by_name_and_none_for_an_unknown_one():
    letsencrypt = find_ca("letsencrypt")
    assert isinstance(letsencrypt, CertificateAuthority)
    assert letsencrypt.directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert find_ca(" ZeroSSL ") is CATALOG[2]
    assert find_ca("google-staging") == CATALOG[4]
    assert find_ca("letsencrypt-test") is None
    assert find_ca("") is None
