"""deploy/: the systemd unit (checked by systemd-analyze), its example config, and the
docker compose example (read statically; no Docker engine runs here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from broker.config import load_settings
from tests.support import ROOT, require_binary

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "dns01-broker.service"
RENEW = DEPLOY / "dns01-broker-renew.service"
TIMER = DEPLOY / "dns01-broker-renew.timer"
EXEC = "/opt/dns01-broker/.venv/bin/dns01-broker"


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, keys repeated as systemd allows."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            settings.setdefault(match.group(1), []).append(match.group(2))
    return settings


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path):
    analyze = require_binary("systemd-analyze")
    executable = tmp_path / "dns01-broker"
    executable.write_text("#!/bin/sh\n", encoding="utf-8")
    executable.chmod(0o755)
    units = []
    for source in (UNIT, RENEW, TIMER):
        unit = tmp_path / source.name
        unit.write_text(source.read_text(encoding="utf-8").replace(EXEC, str(executable)))
        units.append(str(unit))
    done = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_renewal_timer_runs_renew_all_twice_a_day_at_a_random_minute():
    service = unit_settings(RENEW)
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [f"{EXEC} renew --all"]
    assert service["Environment"] == ["DNS01_BROKER_CONFIG=/etc/dns01-broker/broker.toml"]
    assert "User" not in service  # root: /etc/dns01-broker/live and deploy hooks
    timer = unit_settings(TIMER)
    assert timer["OnCalendar"] == ["*-*-* 00,12:00:00"]
    assert timer["RandomizedDelaySec"] == ["1h"]
    assert timer["Persistent"] == ["true"]
    assert timer["WantedBy"] == ["timers.target"]


def test_systemd_unit_runs_serve_as_a_system_user_under_hardening():
    settings = unit_settings()
    assert settings["ExecStart"] == [f"{EXEC} serve"]
    assert settings["Environment"] == ["DNS01_BROKER_CONFIG=/etc/dns01-broker/broker.toml"]
    assert settings["User"] == ["dns01-broker"]
    assert settings["Type"] == ["simple"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["StateDirectory"] == ["dns01-broker"]
    assert settings["ConfigurationDirectory"] == ["dns01-broker"]
    for flag in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert settings[flag] == ["yes"], flag
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert settings["SystemCallFilter"][0] == "@system-service"
    sysusers = (DEPLOY / "dns01-broker.sysusers.conf").read_text(encoding="utf-8")
    assert re.search(r"^u dns01-broker - .* /var/lib/dns01-broker ", sysusers, re.MULTILINE)


def test_systemd_example_config_is_accepted_and_keeps_state_in_the_state_directory():
    settings = load_settings(DEPLOY / "broker.toml", {})
    state = Path("/var/lib/dns01-broker")
    assert settings.store.sqlite_path.parent == state
    assert settings.auth.bootstrap_token_file.parent == state
    assert settings.acme.passphrase_file.parent == state
    assert settings.dns.addresses == [("0.0.0.0", 53)]
    assert settings.http.address == ("127.0.0.1", 8080)


def compose() -> dict:
    document: dict = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return document


def compose_env() -> dict[str, str]:
    lines = (DEPLOY / "compose.env").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_runs_two_brokers_sharing_postgresql_16():
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:16"
    brokers = [services["broker-1"], services["broker-2"]]
    for broker in brokers:
        assert broker["env_file"] == "compose.env"
        assert broker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert broker["read_only"] is True
        assert broker["cap_drop"] == ["ALL"]
        assert "./compose.broker.toml:/etc/dns01-broker/broker.toml:ro" in broker["volumes"]
        assert set(broker["secrets"]) == {"postgres_password", "acme_passphrase"}
    published = [port for broker in brokers for port in broker["ports"]]
    assert len(published) == len(set(published))
    env = compose_env()
    assert env["DNS01_BROKER_STORE__URL"].startswith("postgresql://broker@postgres:5432/")
    assert env["DNS01_BROKER_STORE__PASSWORD"] == "file:/run/secrets/postgres_password"


def test_compose_keeps_every_secret_in_files_outside_git():
    document = compose()
    for secret in document["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "secrets/" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    postgres_env = document["services"]["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in postgres_env
    assert postgres_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert not re.search(r"postgresql://[^@/]*:[^@/]*@", (DEPLOY / "compose.env").read_text())


def test_compose_broker_config_is_accepted_with_the_compose_environment(tmp_path: Path):
    env = compose_env()
    for name, value in env.items():
        if value.startswith("file:/run/secrets/"):
            secret = tmp_path / value.rsplit("/", 1)[1]
            secret.write_text("not-a-real-secret\n", encoding="utf-8")
            env[name] = f"file:{secret}"
    env["DNS01_BROKER_CONFIG"] = str(DEPLOY / "compose.broker.toml")
    settings = load_settings(None, env)
    assert not settings.store.is_sqlite
    assert settings.store.password is not None
    assert settings.store.password.get_secret_value() == "not-a-real-secret"
    assert settings.acme.account_key_passphrase is not None
    assert settings.dns.addresses == [("0.0.0.0", 8053)]
