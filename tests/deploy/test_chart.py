"""The Helm chart, rendered and linted by a real helm: what a cluster would be given."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import load_settings
from tests.deploy.helm import CHART, FULLNAME, NAMESPACE, Helm

STATE = "/var/lib/dns01-broker"
CONFIG_PATH = "/etc/dns01-broker/broker.toml"
SHARED_STORE: dict[str, Any] = {
    "replicaCount": 3,
    "store": {"existingSecret": "broker-store", "urlKey": "url", "passwordKey": "password"},
    "acme": {"passphraseSecret": "broker-acme", "passphraseKey": "passphrase"},
}


def secret_ref(env: dict[str, Any]) -> tuple[str, str]:
    ref = env["valueFrom"]["secretKeyRef"]
    assert "value" not in env
    return ref["name"], ref["key"]


def test_default_and_shared_store_values_pass_helm_lint_strict(helm: Helm):
    assert "0 chart(s) failed" in helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in helm.run("lint", "--strict", str(CHART), values=SHARED_STORE)


def test_default_values_render_one_replica_with_sqlite_on_the_emptydir(helm: Helm):
    rendered = helm.template()
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert rendered.settings["store"]["url"] == f"sqlite:///{STATE}/broker.db"
    assert "DNS01_BROKER_STORE__URL" not in rendered.env
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in rendered.container["volumeMounts"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    assert mounts["state"] == STATE
    assert rendered.all("PersistentVolumeClaim") == []
    assert rendered.all("PodDisruptionBudget") == []


def test_config_is_mounted_where_dns01_broker_config_points(helm: Helm):
    rendered = helm.template()
    assert rendered.env["DNS01_BROKER_CONFIG"]["value"] == CONFIG_PATH
    (mount,) = [m for m in rendered.container["volumeMounts"] if m["name"] == "config"]
    assert f"{mount['mountPath']}/broker.toml" == CONFIG_PATH
    assert mount["readOnly"] is True
    (volume,) = [v for v in rendered.pod["spec"]["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == FULLNAME
    assert rendered.container["args"] == ["serve"]


def test_chart_owns_listen_addresses_and_state_paths(helm: Helm):
    settings = helm.template().settings
    assert settings["http"]["listen"] == "0.0.0.0:8080"
    assert settings["dns"]["listen"] == ["0.0.0.0:8053"]
    assert settings["auth"]["bootstrap_token_file"] == f"{STATE}/admin.token"
    assert settings["acme"]["passphrase_file"].startswith(f"{STATE}/")
    assert settings["log"]["format"] == "json"


@pytest.mark.parametrize(
    "store",
    [
        {},
        {"url": "sqlite:////var/lib/dns01-broker/other.db"},
        {"existingSecret": "broker-store", "urlKey": ""},
    ],
    ids=["default-sqlite", "sqlite-url", "secret-without-url-key"],
)
def test_several_replicas_without_a_shared_store_refuse_to_render(
    helm: Helm, store: dict[str, str]
):
    message = helm.refusal({**SHARED_STORE, "store": store})
    assert "several replicas need a shared PostgreSQL store: set store.existingSecret" in message


def test_several_replicas_without_a_shared_acme_passphrase_refuse_to_render(helm: Helm):
    values = {**SHARED_STORE, "acme": {"passphraseSecret": ""}}
    assert "acme.passphraseSecret" in helm.refusal(values)
    values["acme"]["issuesCertificates"] = False
    assert helm.template(values).one("Deployment")["spec"]["replicas"] == 3


def test_several_replicas_read_the_store_url_and_password_from_the_secret(helm: Helm):
    rendered = helm.template(SHARED_STORE)
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    env = rendered.env
    assert secret_ref(env["DNS01_BROKER_STORE__URL"]) == ("broker-store", "url")
    assert secret_ref(env["DNS01_BROKER_STORE__PASSWORD"]) == ("broker-store", "password")
    assert secret_ref(env["DNS01_BROKER_ACME__ACCOUNT_KEY_PASSPHRASE"]) == (
        "broker-acme",
        "passphrase",
    )
    assert "store" not in rendered.settings


def test_a_postgresql_url_without_password_may_sit_in_values(helm: Helm):
    url = "postgresql://broker@postgres.db.svc:5432/broker"
    store = {"url": url, "existingSecret": "pg", "urlKey": "", "passwordKey": "password"}
    values = {**SHARED_STORE, "store": store}
    rendered = helm.template(values)
    assert rendered.settings["store"]["url"] == url
    assert "DNS01_BROKER_STORE__URL" not in rendered.env
    assert secret_ref(rendered.env["DNS01_BROKER_STORE__PASSWORD"]) == ("pg", "password")


def test_secret_values_never_reach_the_rendered_output(helm: Helm):
    canary = "canary-5e1f0c2a9b7d"
    rendered = helm.template(
        SHARED_STORE,
        DNS01_BROKER_STORE__URL=f"postgresql://broker:{canary}@db/broker",
        DNS01_BROKER_STORE__PASSWORD=canary,
        PGPASSWORD=canary,
    )
    assert canary not in rendered.text
    message = helm.refusal({"store": {"url": f"postgresql://broker:{canary}@db:5432/broker"}})
    assert "store.url holds a password" in message
    assert canary not in message


def test_probes_ask_healthz_and_readyz_on_the_http_port(helm: Helm):
    container = helm.template().container
    probe = {"port": "http", "scheme": "HTTP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", **probe}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", **probe}
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {("http", 8080, "TCP"), ("dns-udp", 8053, "UDP"), ("dns-tcp", 8053, "TCP")}


def test_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities(helm: Helm):
    rendered = helm.template()
    pod = rendered.pod["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = rendered.container["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert rendered.pod["spec"]["automountServiceAccountToken"] is False
    assert rendered.container["resources"]["limits"]["memory"]


def test_dns_service_answers_udp_and_tcp_53_from_8053(helm: Helm):
    service = helm.template().one("Service", f"{FULLNAME}-dns")["spec"]
    ports = {(p["protocol"], p["port"], p["targetPort"]) for p in service["ports"]}
    assert ports == {("UDP", 53, "dns-udp"), ("TCP", 53, "dns-tcp")}
    assert service["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in service


def test_dns_load_balancer_keeps_source_addresses(helm: Helm):
    dns = {"type": "LoadBalancer", "loadBalancerSourceRanges": ["198.51.100.0/24"]}
    service = helm.template({"service": {"dns": dns}}).one("Service", f"{FULLNAME}-dns")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    assert service["loadBalancerSourceRanges"] == ["198.51.100.0/24"]


def test_http_service_targets_the_http_port(helm: Helm):
    service = helm.template().one("Service")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, "http")
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "http"


def pod_environment(rendered_env: dict[str, dict[str, Any]], secrets: dict[str, str]) -> dict:
    """The environment the pod would get, with ``secrets`` standing in for secretKeyRefs."""
    env = {}
    for name, item in rendered_env.items():
        if "value" in item:
            env[name] = item["value"]
        else:
            env[name] = secrets["/".join(secret_ref(item))]
    return env


def test_rendered_config_is_accepted_by_the_brokers_own_loader(helm: Helm, tmp_path: Path):
    values = {
        **SHARED_STORE,
        "config": {
            "providers": {
                "embedded": {
                    "type": "embedded",
                    "zones": [
                        {
                            "name": "acme.example.com",
                            "nameservers": [
                                {"name": "ns1.acme.example.com", "addresses": ["203.0.113.53"]}
                            ],
                        }
                    ],
                }
            },
            "propagation": {"nameservers": {"acme.example.com": ["203.0.113.53:53"]}},
            "challenges": {"default_lease": "30m", "txt_ttl": 30},
        },
    }
    rendered = helm.template(values)
    config = tmp_path / "broker.toml"
    config.write_text(rendered.broker_toml, encoding="utf-8")
    env = pod_environment(
        rendered.env,
        {
            "broker-store/url": "postgresql://broker@postgres.db.svc:5432/broker",
            "broker-store/password": "not-a-real-password",
            "broker-acme/passphrase": "not-a-real-passphrase",
        },
    )
    env["DNS01_BROKER_CONFIG"] = str(config)
    settings = load_settings(None, env)
    assert settings.http.address == ("0.0.0.0", 8080)
    assert settings.dns.addresses == [("0.0.0.0", 8053)]
    assert not settings.store.is_sqlite
    assert settings.store.password is not None
    assert settings.acme.account_key_passphrase is not None
    assert settings.auth.bootstrap_token_file == Path(f"{STATE}/admin.token")
    (provider,) = settings.provider_settings().values()
    assert provider.zone_names() == ("acme.example.com.",)
    assert settings.challenges.default_lease == 1800


async def test_a_broker_started_on_the_rendered_config_answers_both_probes(
    helm_binary: str, tmp_path: Path, start_broker
):
    rendered = Helm(helm_binary, tmp_path).template()
    config = tmp_path / "broker.toml"
    config.write_text(rendered.broker_toml, encoding="utf-8")
    state = tmp_path / "state"
    settings = load_settings(
        config,
        {
            "DNS01_BROKER_HTTP__LISTEN": "127.0.0.1:0",
            "DNS01_BROKER_DNS__LISTEN": "127.0.0.1:0",
            "DNS01_BROKER_STORE__URL": f"sqlite:///{state}/broker.db",
            "DNS01_BROKER_AUTH__BOOTSTRAP_TOKEN_FILE": str(state / "admin.token"),
            "DNS01_BROKER_ACME__PASSPHRASE_FILE": str(state / "acme-account.passphrase"),
        },
    )
    running = await start_broker(settings)
    container = rendered.container
    for probe in ("livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        async with running.session.get(running.url + path) as response:
            assert response.status == 200, (probe, path, await response.text())


TRICKY_CONFIG: dict[str, Any] = {
    "providers": {
        "embedded": {
            "type": "embedded",
            "zones": [
                {
                    "name": "a.example",
                    "minimum": 30,
                    "nameservers": [
                        {"name": "ns1.a.example", "addresses": ["192.0.2.1", "2001:db8::1"]},
                        {"name": "ns2.a.example", "addresses": []},
                    ],
                },
                {"name": "b.example", "soa": {"refresh": 7200}},
            ],
        },
    },
    "propagation": {"nameservers": {"a.example": ["192.0.2.1:53"], "key with space": []}},
    "strings": {
        "quote": 'say "hi"',
        "backslash": "C:\\path\\",
        "controls": "line\nnext\ttab\r\x01",
        "delete": "a\x7fb",
        "unicode": "bücher ☃ 𝄞",
        "html": "<a href='x'>&amp;</a>",
        "looks_like_toml": 'x = 1\n[table]\n"""',
        "empty": "",
        "true_text": "true",
        "number_text": "60",
    },
    "numbers": {"int": 60, "big": 4000000000, "negative": -3, "float": 0.05, "zero": 0},
    "flags": {"on": True, "off": False},
    "lists": {
        "empty": [],
        "strings": ["a", "b,c"],
        "nested": [[1, 2], ["x"]],
        "mixed": [{"inline": {"deep": [1]}}, "text"],
        "of_empty_tables": [{}],
    },
    "empty_table": {},
}


def test_toml_helper_renders_nested_values_exactly(helm: Helm):
    settings = helm.template({"config": TRICKY_CONFIG}).settings
    for owned in ("http", "dns", "auth", "store", "log", "acme"):
        settings.pop(owned)
    assert settings == TRICKY_CONFIG


def test_config_values_for_chart_owned_keys_are_replaced(helm: Helm):
    config = {
        "http": {"listen": "127.0.0.1:9999", "access_log": True},
        "dns": {"listen": ["127.0.0.1:5353"]},
        "store": {"url": "sqlite:///elsewhere.db"},
        "log": {"format": "text", "level": "DEBUG"},
    }
    settings = helm.template({"config": config}).settings
    assert settings["http"] == {"listen": "0.0.0.0:8080", "access_log": True}
    assert settings["dns"] == {"listen": ["0.0.0.0:8053"]}
    assert settings["store"] == {"url": f"sqlite:///{STATE}/broker.db"}
    assert settings["log"] == {"format": "text", "level": "DEBUG"}


def test_a_config_change_rolls_the_pods(helm: Helm):
    def checksum(values: dict[str, Any]) -> str:
        annotation: str = helm.template(values).pod["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"replicaCount": 1}) == base
    assert checksum({"config": {"challenges": {"txt_ttl": 30}}}) != base


OPTIONAL = {
    "ServiceMonitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "NetworkPolicy": {"networkPolicy": {"enabled": True}},
    "PodDisruptionBudget": SHARED_STORE,
    "ServiceAccount": {"serviceAccount": {"create": True}},
    "PersistentVolumeClaim": {"persistence": {"enabled": True}},
}


@pytest.mark.parametrize("kind", OPTIONAL)
def test_optional_resources_appear_only_when_enabled(helm: Helm, kind: str):
    assert helm.template().all(kind) == []
    assert len(helm.template(OPTIONAL[kind]).all(kind)) == 1


def test_pod_disruption_budget_can_be_turned_off(helm: Helm):
    values = {**SHARED_STORE, "podDisruptionBudget": {"enabled": False}}
    assert helm.template(values).all("PodDisruptionBudget") == []
    (pdb,) = helm.template(SHARED_STORE).all("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_service_monitor_scrapes_metrics_on_the_http_service(helm: Helm):
    rendered = helm.template({"metrics": {"serviceMonitor": {"enabled": True}}})
    (monitor,) = rendered.all("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    http_labels = rendered.one("Service")["metadata"]["labels"]
    dns_labels = rendered.one("Service", f"{FULLNAME}-dns")["metadata"]["labels"]
    assert selector.items() <= http_labels.items()
    assert not selector.items() <= dns_labels.items()


def test_network_policy_admits_http_and_dns_and_leaves_egress_open_by_default(helm: Helm):
    http_from = [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]
    values = {"networkPolicy": {"enabled": True, "httpFrom": http_from}}
    (policy,) = helm.template(values).all("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    http_rule, dns_rule = policy["spec"]["ingress"]
    assert http_rule == {"ports": [{"port": 8080, "protocol": "TCP"}], "from": http_from}
    assert {(p["port"], p["protocol"]) for p in dns_rule["ports"]} == {
        (8053, "UDP"),
        (8053, "TCP"),
    }
    assert "from" not in dns_rule
    egress = [{"ports": [{"port": 53, "protocol": "UDP"}]}]
    restricted = {"networkPolicy": {"enabled": True, "restrictEgress": True, "egress": egress}}
    (policy,) = helm.template(restricted).all("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == egress


def test_service_account_never_mounts_its_token(helm: Helm):
    values = {
        "serviceAccount": {"create": True, "annotations": {"eks.amazonaws.com/role-arn": "x"}}
    }
    rendered = helm.template(values)
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert rendered.pod["spec"]["serviceAccountName"] == FULLNAME


def test_persistence_keeps_state_on_a_claim_and_recreates_the_pod(helm: Helm):
    rendered = helm.template({"persistence": {"enabled": True, "size": "2Gi"}})
    claim = rendered.one("PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == FULLNAME
    assert rendered.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    message = helm.refusal({**SHARED_STORE, "persistence": {"enabled": True}})
    assert "persistence.enabled is for one replica" in message


def test_provider_credentials_come_from_secrets_as_env_and_files(helm: Helm):
    values = {
        "extraEnvFromSecrets": [
            {"name": "AWS_ACCESS_KEY_ID", "secret": "route53", "key": "id"},
            {"name": "AWS_SECRET_ACCESS_KEY", "secret": "route53", "key": "secret"},
        ],
        "extraSecretMounts": [
            {
                "name": "gcp",
                "secret": "gcp-sa",
                "mountPath": "/var/run/secrets/dns01-broker/gcp",
                "items": [{"key": "sa.json", "path": "sa.json"}],
            }
        ],
        "config": {
            "providers": {
                "gcp": {
                    "type": "google",
                    "project": "p",
                    "credentials": "file:/var/run/secrets/dns01-broker/gcp/sa.json",
                }
            }
        },
    }
    rendered = helm.template(values)
    assert secret_ref(rendered.env["AWS_ACCESS_KEY_ID"]) == ("route53", "id")
    assert secret_ref(rendered.env["AWS_SECRET_ACCESS_KEY"]) == ("route53", "secret")
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["secret-gcp"]["mountPath"] == "/var/run/secrets/dns01-broker/gcp"
    assert mounts["secret-gcp"]["readOnly"] is True
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert volumes["secret-gcp"]["secret"]["secretName"] == "gcp-sa"
    assert rendered.settings["providers"]["gcp"]["credentials"].startswith("file:/var/run/")


def test_incomplete_secret_references_refuse_to_render(helm: Helm):
    message = helm.refusal({"store": {"passwordKey": "password"}})
    assert "set store.existingSecret" in message


def test_replicas_prefer_different_nodes_unless_affinity_is_given(helm: Helm):
    affinity = helm.template().pod["spec"]["affinity"]
    (term,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert labels == {
        "app.kubernetes.io/name": "dns01-broker",
        "app.kubernetes.io/instance": "edge",
    }
    given = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    assert helm.template({"affinity": given}).pod["spec"]["affinity"] == given


def test_every_resource_carries_the_standard_labels(helm: Helm):
    everything = {
        **SHARED_STORE,
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
        "serviceAccount": {"create": True},
    }
    for manifest in helm.template(everything).manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dns01-broker", manifest["kind"]
        assert labels["app.kubernetes.io/instance"] == "edge"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "three"}, "replicaCount"),
        ({"stor": {"url": "sqlite:///x.db"}}, "stor"),
        ({"store": {"url": "mysql://db/broker"}}, "/store/url"),
        ({"service": {"dns": {"type": "External"}}}, "/service/dns/type"),
    ],
)
def test_schema_refuses_mistyped_values(helm: Helm, values: dict[str, Any], complaint: str):
    assert complaint in helm.refusal(values)


KUBERNETES_OBJECTS = {
    "resources",
    "livenessProbe",
    "readinessProbe",
    "podSecurityContext",
    "securityContext",
}
"""Values passed to Kubernetes as they are: the comment on the key documents its fields."""


def test_values_yaml_documents_every_key():
    undocumented = []
    parents: list[tuple[int, str]] = []
    previous = ""
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        key = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if key:
            indent = len(key.group(1))
            parents = [(i, k) for i, k in parents if i < indent]
            inside_object = any(k in KUBERNETES_OBJECTS for _, k in parents)
            if not (inside_object or previous.startswith("#")):
                undocumented.append(f"values.yaml:{number}: {line.strip()}")
            parents.append((indent, key.group(2)))
        previous = line.strip()
    assert undocumented == []


def test_values_yaml_has_no_secret_looking_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = json.dumps(values)
    assert not re.search(r"(?i)(password|passphrase|secret_access_key)\"?\s*:\s*\"[^\"]+\"", text)
    assert "://" not in values["store"]["url"].removeprefix("sqlite://")


def test_notes_tell_how_to_get_an_admin_token_and_where_dns_is(helm: Helm):
    notes = helm.notes({"service": {"dns": {"type": "LoadBalancer"}}})
    exec_line = (
        f"kubectl -n {NAMESPACE} exec deploy/{FULLNAME} -- dns01-broker token create "
        "--name ops --admin"
    )
    assert exec_line in notes
    assert f"{FULLNAME}-dns" in notes
    assert ".status.loadBalancer.ingress" in notes
    assert "emptyDir" in notes
    shared = helm.notes(SHARED_STORE)
    assert "emptyDir" not in shared
    assert "WARNING" not in shared


def test_chart_metadata_names_the_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"
    pyproject = tomllib.loads((CHART.parent.parent / "pyproject.toml").read_text())
    assert chart["appVersion"] == pyproject["project"]["version"]
