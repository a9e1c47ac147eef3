"""The chart rendered by a real helm binary: manifests as dicts, refusals as helm's message."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import IN_CI, ROOT

CHART = ROOT / "charts" / "dns01-broker"
PINNED_HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "edge"
NAMESPACE = "certs"
FULLNAME = f"{RELEASE}-dns01-broker"


def find_helm() -> str:
    """``make helm`` puts helm in .tools/bin; else one on PATH. Missing: skip, or fail in CI."""
    if PINNED_HELM.is_file():
        return str(PINNED_HELM)
    found = shutil.which("helm")
    if found is None:
        message = f"helm is not installed ({PINNED_HELM.relative_to(ROOT)}: run `make helm`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass(frozen=True)
class Rendered:
    text: str
    manifests: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str = FULLNAME) -> dict[str, Any]:
        (found,) = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        return found

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["spec"]["containers"]
        return dict(container)

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {item["name"]: item for item in self.container.get("env", [])}

    @property
    def broker_toml(self) -> str:
        text: str = self.one("ConfigMap")["data"]["broker.toml"]
        return text

    @property
    def settings(self) -> dict[str, Any]:
        return tomllib.loads(self.broker_toml)


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


class Helm:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        home = workdir / "helm-home"
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, values: dict[str, Any] | None = None, **env: str) -> str:
        command = [self.binary, *args]
        if values is not None:
            path = self.workdir / "values.yaml"
            path.write_text(yaml.safe_dump(values), encoding="utf-8")
            command += ["--values", str(path)]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise HelmFailed(done.stderr)
        return done.stdout

    def template(self, values: dict[str, Any] | None = None, **env: str) -> Rendered:
        text = self.run(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, **env
        )
        manifests = [doc for doc in yaml.safe_load_all(text) if doc]
        return Rendered(text, manifests)

    def refusal(self, values: dict[str, Any]) -> str:
        """helm's message when the chart refuses ``values``."""
        with pytest.raises(HelmFailed) as refused:
            self.template(values)
        return str(refused.value)

    def notes(self, values: dict[str, Any] | None = None) -> str:
        text = self.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            values=values,
        )
        return text.split("NOTES:", 1)[1]
