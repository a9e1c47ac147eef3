"""The chart's OIDC part: issuers and rules rendered from config.oidc into TOML that the
broker's loader accepts, an air-gapped JWKS ConfigMap mounted where jwks_file points, and
the schema refusing ``none`` and HMAC algorithms before anything is deployed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.config import load_settings
from tests.deploy.helm import Helm
from tests.fakes.oidc import LocalIssuer

OIDC: dict[str, Any] = {
    "exchange_lifetime": "10m",
    "issuers": [
        {
            "name": "github",
            "issuer": "https://token.actions.githubusercontent.com",
            "audience": "https://broker.example.com",
            "algorithms": ["RS256"],
            "rules": [
                {
                    "claims": {"repository": "org/web", "ref": "refs/heads/main"},
                    "allow": ["*.web.example.com", "web.example.com"],
                },
                {"claims": {"repository_owner": "org"}, "allow": "staging.example.com"},
            ],
        },
        {
            "name": "gitlab",
            "issuer": "https://gitlab.example.com",
            "audience": ["https://broker.example.com"],
            "jwks_file": "/etc/dns01-broker-oidc/gitlab.json",
            "rules": [{"claims": {"project_path": "group/*"}, "allow": ["api.example.com"]}],
        },
    ],
}


def test_oidc_issuers_and_rules_render_into_config_the_broker_loads(helm: Helm, tmp_path: Path):
    rendered = helm.template({"config": {"oidc": OIDC}, "oidc": {"jwksConfigMap": "ci-jwks"}})
    jwks = LocalIssuer().jwks()
    local = tmp_path / "gitlab.json"
    local.write_text(json.dumps(jwks))
    text = rendered.broker_toml.replace("/etc/dns01-broker-oidc/gitlab.json", str(local))
    config = tmp_path / "broker.toml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config, {})
    github, gitlab = settings.oidc.issuers
    assert settings.oidc.exchange_lifetime == 600
    assert github.rules[0].claims == {"repository": "org/web", "ref": "refs/heads/main"}
    assert github.rules[1].allow == ["staging.example.com"]
    assert gitlab.jwks_file == local
    deployment = next(m for m in rendered.manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "oidc-jwks", "configMap": {"name": "ci-jwks"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "oidc-jwks", "mountPath": "/etc/dns01-broker-oidc", "readOnly": True} in mounts


def test_without_a_jwks_configmap_nothing_is_mounted(helm: Helm):
    deployment = next(m for m in helm.template().manifests if m["kind"] == "Deployment")
    assert "oidc-jwks" not in str(deployment)


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_schema_refuses_none_and_hmac(helm: Helm, algorithm: str):
    issuer = {**OIDC["issuers"][0], "algorithms": [algorithm]}
    assert "algorithms" in helm.refusal({"config": {"oidc": {"issuers": [issuer]}}})


def test_schema_refuses_an_issuer_without_rules(helm: Helm):
    issuer = {k: v for k, v in OIDC["issuers"][0].items() if k != "rules"}
    assert "rules" in helm.refusal({"config": {"oidc": {"issuers": [issuer]}}})
