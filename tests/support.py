"""Test helpers: a broker on ephemeral loopback ports, called as clients call it, and the
OpenAPI contract every response is checked against."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012 as _DRAFT_2020_12

from broker.auth import issue_token
from broker.config import Settings, load_settings
from broker.runtime import Broker

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str) -> str:
    """The path of a program a test needs: missing is a skip locally and a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_config(
    tmp_path: Path,
    extra_toml: str = "",
    *,
    state: str = "",
    store_url: str | None = None,
    dns_toml: str = "",
) -> Path:
    """A config file on ephemeral loopback ports, with the token file in
    ``tmp_path/state`` (which the broker creates), and the store there too unless
    ``store_url`` names another; ``dns_toml`` goes into the ``[dns]`` table."""
    state_dir = tmp_path / state if state else tmp_path
    config = tmp_path / "broker.toml"
    config.write_text(
        f"""
[http]
listen = "127.0.0.1:0"
[dns]
listen = ["127.0.0.1:0"]
{dns_toml}
[store]
url = "{store_url or f"sqlite:///{state_dir}/broker.db"}"
[auth]
bootstrap_token_file = "{state_dir}/admin.token"
{extra_toml}
""",
        encoding="utf-8",
    )
    return config


def write_settings(tmp_path: Path, extra_toml: str = "", **env: str) -> Settings:
    """Settings on ephemeral ports with the store and token file under ``tmp_path``."""
    return load_settings(write_config(tmp_path, extra_toml), env)


class Running:
    """A started broker with helpers to call it the way clients do."""

    def __init__(self, broker: Broker, session: aiohttp.ClientSession, tmp_path: Path) -> None:
        self.broker = broker
        self.session = session
        self.tmp_path = tmp_path

    @property
    def url(self) -> str:
        return self.broker.http_url

    @property
    def admin_token(self) -> str:
        return self.broker.settings.auth.bootstrap_token_file.read_text().strip()

    async def token(
        self,
        name: str,
        allow: list[str],
        *,
        cidrs: list[str] | None = None,
        lifetime: float | None = None,
        admin: bool = False,
        persist: bool = False,
    ) -> str:
        issued = issue_token(
            name, allow, cidrs=cidrs or [], lifetime=lifetime, admin=admin, persist=persist
        )
        await self.broker.store.create_token(issued.record)
        return issued.secret

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=all_headers
        ) as response:
            body: Any
            if response.content_type in ("application/json", "application/problem+json"):
                body = await response.json(content_type=None)
            else:
                body = await response.text()
            return response.status, body, response

    async def txt(self, name: str, *, tcp: bool = False) -> tuple[str, list[str]]:
        """(rcode text, sorted TXT values) as the embedded DNS server answers ``name``."""
        answer = await self.query(name, "TXT", tcp=tcp)
        values = sorted(
            b"".join(rdata.strings).decode()
            for rrset in answer.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        )
        return dns.rcode.to_text(answer.rcode()), values

    async def query(self, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
        assert self.broker.dns_server is not None
        host, port = self.broker.dns_server.addresses[0]
        query = dns.message.make_query(name, rdtype)
        send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        return await send(query, host, port=port, timeout=2.0)


class OpenApi:
    """Validates response bodies against openapi.yaml (OpenAPI 3.1 = JSON Schema 2020-12)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=_DRAFT_2020_12)
        self._registry: Registry[Any] = Registry().with_resource("openapi.yaml", resource)

    def paths(self) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, item in self.spec["paths"].items()
            for method in item
            if method in ("get", "post", "put", "delete", "patch")
        }

    def check(self, method: str, template: str, status: int, body: Any) -> None:
        operation = self.spec["paths"][template][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template} may not answer {status}"
        response = responses[str(status)]
        if "$ref" in response:
            response = self._resolve(response["$ref"])
        content = response.get("content", {})
        media = next(iter(content.values()), None)
        if media is None:
            return
        validator = jsonschema.Draft202012Validator(
            _rebase(media["schema"]),
            registry=self._registry,
            format_checker=jsonschema.FormatChecker(),
        )
        validator.validate(body)

    def _resolve(self, ref: str) -> Any:
        node: Any = self.spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node


def _rebase(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: (
                "openapi.yaml" + value
                if key == "$ref" and value.startswith("#")
                else _rebase(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema


class Api:
    """HTTP calls whose every response is validated against openapi.yaml."""

    def __init__(self, running: Running, spec: OpenApi) -> None:
        self.running = running
        self.spec = spec

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        template: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        status, body, _ = await self.running.call(method, path, token, **kwargs)
        self.spec.check(method, template or path.split("?", maxsplit=1)[0], status, body)
        return status, body
