"""The chart's tls.secretName: the Secret mounted as a directory (so renewals reach the
pod), the broker pointed at its files, probes and the ServiceMonitor on HTTPS."""

from __future__ import annotations

from pathlib import Path

from broker.config import load_settings
from tests.deploy.helm import Helm

TLS_DIR = "/var/run/secrets/dns01-broker/tls"
WITH_TLS = {"tls": {"secretName": "api-tls"}}


def test_without_tls_the_api_and_its_probes_are_plain_http(helm: Helm):
    rendered = helm.template({"metrics": {"serviceMonitor": {"enabled": True}}})
    container = rendered.container
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert "tls" not in {volume["name"] for volume in rendered.pod["spec"]["volumes"]}
    assert "tls_cert_file" not in rendered.settings["http"]
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    assert "scheme" not in endpoint


def test_a_tls_secret_is_mounted_whole_and_the_broker_serves_its_files(helm: Helm, tmp_path: Path):
    monitor = {"enabled": True, "tlsConfig": {"serverName": "broker.example.com"}}
    rendered = helm.template({**WITH_TLS, "metrics": {"serviceMonitor": monitor}})
    container = rendered.container
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (volume,) = [v for v in rendered.pod["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "api-tls"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert (mount["mountPath"], mount["readOnly"], "subPath" in mount) == (TLS_DIR, True, False)
    config = tmp_path / "broker.toml"
    config.write_text(rendered.broker_toml, encoding="utf-8")
    http = load_settings(config, {}).http
    assert (http.tls_cert_file, http.tls_key_file) == (
        Path(f"{TLS_DIR}/tls.crt"),
        Path(f"{TLS_DIR}/tls.key"),
    )
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"serverName": "broker.example.com"}


def test_a_mistyped_tls_value_is_refused(helm: Helm):
    assert "/tls/secretName" in helm.refusal({"tls": {"secretName": 3}})
    assert "/tls" in helm.refusal({"tls": {"secret": "api-tls"}})
