"""The Dockerfile, read statically (no image is built here: this machine has no Docker
engine), and its HEALTHCHECK command run against a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field

import yaml

from tests.peers import free_port
from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "python:3.11-slim-bookworm"
VENV = "/opt/dns01-broker/.venv"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args


def stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    parsed: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            parsed.append(Stage(base.strip(), name.strip() or None))
        else:
            parsed[-1].instructions.append((keyword, " ".join(args.split())))
    return parsed


def test_two_stages_on_the_same_slim_python():
    builder, final = stages()
    assert (builder.base, builder.name) == (BASE_IMAGE, "builder")
    assert (final.base, final.name) == (BASE_IMAGE, None)


def test_builder_installs_the_project_with_its_deployment_extras_into_a_virtualenv():
    builder = stages()[0]
    runs = " ".join(builder.all("RUN"))
    assert f"python -m venv {VENV}" in runs
    assert f'{VENV}/bin/pip install ".[postgres,route53,google]"' in runs
    copied = {source for args in builder.all("COPY") for source in args.split()[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {pattern.rstrip("*") + "/" for pattern in packages}
    assert needed <= copied


def test_final_stage_holds_only_the_virtualenv_and_no_build_tools():
    final = stages()[-1]
    assert final.all("COPY") == [f"--from=builder {VENV} {VENV}"]
    runs = " ".join(final.all("RUN"))
    for tool in ("apt-get", "build-essential", "gcc", "pip install", "-dev "):
        assert tool not in runs


def test_final_stage_runs_as_the_unprivileged_user_the_chart_expects():
    final = stages()[-1]
    user = final.one("USER")
    assert user == "10001:10001"
    chart_values = yaml.safe_load((ROOT / "charts/dns01-broker/values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == int(user.split(":")[0])
    assert final.one("WORKDIR") == "/var/lib/dns01-broker"
    assert "useradd --system --uid 10001" in " ".join(final.all("RUN"))


def test_image_serves_http_and_dns_on_unprivileged_ports_of_every_address():
    final = stages()[-1]
    assert json.loads(final.one("ENTRYPOINT")) == ["dns01-broker"]
    assert json.loads(final.one("CMD")) == ["serve"]
    assert set(final.one("EXPOSE").split()) == {"8080/tcp", "8053/udp", "8053/tcp"}
    env = " ".join(final.all("ENV"))
    assert "DNS01_BROKER_HTTP__LISTEN=0.0.0.0:8080" in env
    assert "DNS01_BROKER_DNS__LISTEN=0.0.0.0:8053" in env
    assert f"PATH={VENV}/bin:$PATH" in env


def healthcheck_command() -> list[str]:
    healthcheck = stages()[-1].one("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def run_healthcheck(listen: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *healthcheck_command(),
        env={"DNS01_BROKER_HTTP__LISTEN": listen},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 20)


async def test_healthcheck_passes_against_a_serving_broker_and_fails_without_one(running):
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    assert await run_healthcheck(f"{host}:{port}") == 0
    assert await run_healthcheck(f"0.0.0.0:{port}") == 0
    assert await run_healthcheck(f"127.0.0.1:{free_port()}") != 0


def test_dockerignore_keeps_local_state_and_tools_out_of_the_build_context():
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".tools", ".pytest_cache", ".mypy_cache", "var"} <= ignored
    assert not {"broker", "providers", "pyproject.toml", "README.md"} & ignored
