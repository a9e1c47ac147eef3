"""Configuration: TOML plus environment, every problem reported at once, secrets kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.config import ConfigError, load_settings
from broker.values import parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_serve_example_test_on_loopback_with_sqlite():
    settings = load_settings(None, {})
    assert settings.http.address == ("127.0.0.1", 8080)
    assert settings.dns.addresses == [("127.0.0.1", 8053)]
    assert settings.store.sqlite_path == Path("var/broker.db")
    (provider,) = settings.provider_settings().values()
    assert provider.zone_names() == ("example.test.",)


def test_every_problem_is_reported_together_with_its_key_path(tmp_path):
    path = write(
        tmp_path,
        """
[http]
listen = "nowhere"
max_body_bytes = 1
colour = "blue"
[challenges]
default_lease = "forever"
[providers.main]
type = "route99"
[providers.dev]
type = "embedded"
zones = [{ name = "bad..zone" }]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    paths = [p for p, _ in caught.value.problems]
    assert paths == [
        "http.listen",
        "http.max_body_bytes",
        "http.colour",
        "challenges.default_lease",
        "providers.main.type",
        "providers.dev.zones.0.name",
    ]
    messages = dict(caught.value.problems)
    assert "HOST:PORT" in messages["http.listen"]
    assert "embedded" in messages["providers.main.type"]
    assert "unknown setting" in messages["http.colour"]


def test_invalid_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "[http]\nlisten = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    ((where, message),) = caught.value.problems
    assert where == str(path)
    assert "line 2" in message


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", {})


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:9000"\n')
    settings = load_settings(
        path,
        {
            "DNS01_BROKER_HTTP__LISTEN": "[::1]:9001",
            "DNS01_BROKER_DNS__LISTEN": "127.0.0.1:5300,[::1]:5300",
            "DNS01_BROKER_CHALLENGES__DEFAULT_LEASE": "30m",
            "DNS01_BROKER_LOG__LEVEL": "debug",
            "UNRELATED": "x",
        },
    )
    assert settings.http.address == ("::1", 9001)
    assert settings.dns.addresses == [("127.0.0.1", 5300), ("::1", 5300)]
    assert settings.challenges.default_lease == 1800
    assert settings.log.level == "DEBUG"


def test_config_path_can_come_from_the_environment(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:9002"\n')
    assert load_settings(None, {"DNS01_BROKER_CONFIG": str(path)}).http.address[1] == 9002


def test_secret_references_are_resolved_and_never_printed(tmp_path, monkeypatch):
    secret_file = tmp_path / "url"
    secret_file.write_text(f"sqlite:///{tmp_path}/from-file.db\n")
    path = write(tmp_path, f'[store]\nurl = "file:{secret_file}"\n')
    settings = load_settings(path, {})
    assert settings.store.sqlite_path == tmp_path / "from-file.db"
    assert "from-file" not in repr(settings)
    assert "from-file" not in str(settings.model_dump())

    monkeypatch.setenv("BROKER_DB_URL", f"sqlite:///{tmp_path}/from-env.db")
    settings = load_settings(None, {"DNS01_BROKER_STORE__URL": "env:BROKER_DB_URL"})
    assert settings.store.sqlite_path == tmp_path / "from-env.db"


def test_unresolvable_secret_references_are_reported(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"DNS01_BROKER_STORE__URL": "env:DNS01_TEST_SURELY_UNSET"})
    assert caught.value.problems == [
        (
            "store.url",
            "environment variable DNS01_TEST_SURELY_UNSET is not set "
            "(referenced as env:DNS01_TEST_SURELY_UNSET)",
        )
    ]
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings(None, {"DNS01_BROKER_STORE__URL": f"file:{tmp_path}/nope"})


def test_a_zone_served_by_two_providers_is_refused(tmp_path):
    path = write(
        tmp_path,
        """
[providers.a]
type = "embedded"
zones = [{ name = "example.test" }]
[providers.b]
type = "embedded"
zones = [{ name = "Example.Test." }]
""",
    )
    with pytest.raises(ConfigError, match="also served by provider 'a'"):
        load_settings(path, {})


def test_default_lease_may_not_exceed_the_maximum():
    with pytest.raises(ConfigError, match="max_lease"):
        load_settings(
            None,
            {
                "DNS01_BROKER_CHALLENGES__DEFAULT_LEASE": "2d",
                "DNS01_BROKER_CHALLENGES__MAX_LEASE": "1d",
            },
        )


def test_embedded_zone_settings_come_from_config(tmp_path):
    path = write(
        tmp_path,
        """
[providers.dev]
type = "embedded"
[[providers.dev.zones]]
name = "acme.internal"
hostmaster = "dns-admin.acme.internal"
minimum = 30
nameservers = [
  { name = "ns1.acme.internal", addresses = ["127.0.0.1", "::1"] },
  { name = "ns.elsewhere.test" },
]
""",
    )
    zone = load_settings(path, {}).providers["dev"].zones[0]
    assert zone.name == "acme.internal."
    assert [ns.name for ns in zone.nameservers] == ["ns1.acme.internal.", "ns.elsewhere.test."]
    assert [str(a) for a in zone.nameservers[0].addresses] == ["127.0.0.1", "::1"]
    assert zone.minimum == 30


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("1h30m", 5400), ("45s", 45), ("2w", 1209600), (30, 30), ("0.5", 0.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "-5", 0, True, "1h soon"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["3651d", 10**30, 1e308, "9" * 400, "99999999999999999999w"])
def test_durations_beyond_ten_years_are_refused(text):
    with pytest.raises(ValueError, match="at most 3650d"):
        parse_duration(text)


def test_a_setting_longer_than_ten_years_is_a_config_error(tmp_path):
    path = tmp_path / "broker.toml"
    path.write_text('[challenges]\nhistory_retention = "5000d"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert any(
        key == "challenges.history_retention" and "at most 3650d" in message
        for key, message in caught.value.problems
    )


def test_own_cas_are_named_tables_with_a_directory_url(tmp_path):
    good = write(
        tmp_path,
        '[acme.cas.step]\ndirectory = "https://ca.internal/acme/acme/directory"\n'
        'title = "our step-ca"\neab_required = true\n',
    )
    step = load_settings(good, {}).acme.cas["step"]
    assert (step.directory, step.title, step.eab_required) == (
        "https://ca.internal/acme/acme/directory", "our step-ca", True,
    )  # fmt: skip
    bad = write(tmp_path, '[acme.cas.step]\ndirectory = "ca.internal"\nsize = 3\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(bad, {})
    messages = dict(caught.value.problems)
    assert "directory URL" in messages["acme.cas.step.directory"]
    assert "unknown setting" in messages["acme.cas.step.size"]


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (None, 1),
        ("2", 2),
        ("auto", len(os.sched_getaffinity(0))),
        ("0", len(os.sched_getaffinity(0))),
    ],
)
def test_dns_workers_default_to_one_and_auto_counts_the_usable_cpus(value, count):
    env = {} if value is None else {"DNS01_BROKER_DNS__WORKERS": value}
    assert load_settings(None, env).dns.worker_count == count


@pytest.mark.parametrize("value", ["-1", "257", "many"])
def test_a_dns_worker_count_out_of_range_is_refused(value):
    with pytest.raises(ConfigError, match=r"dns\.workers"):
        load_settings(None, {"DNS01_BROKER_DNS__WORKERS": value})
