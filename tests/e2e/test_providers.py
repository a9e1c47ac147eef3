"""One broker, four providers: a present through the native API for a name in each
provider's zone shows up in that backend, and cleanup removes only that value.

Route53 is moto in server mode, Google Cloud DNS the local fake of its REST API driven by
the real client library, RFC 2136 a real knot with TSIG (whose propagation is checked
too), and the embedded zone the broker's own DNS server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest

from broker.config import load_settings
from tests.fakes.clouddns import CloudDnsFake
from tests.peers import free_port
from tests.providers.aws import MotoServer, create_zone, route53_txt
from tests.providers.knot import TsigKnot
from tests.support import Api, Running, require_binary, write_config

pytestmark = pytest.mark.timeout(120)

KEY_NAME = "broker-key."
SECRET = base64.b64encode(b"broker-e2e-tsig-secret-32-bytes!").decode()
VALUES = ("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", "x" * 43)


@dataclass
class Backends:
    moto: MotoServer
    gcp: CloudDnsFake
    knot: TsigKnot


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Backends]:
    moto = MotoServer()
    await asyncio.to_thread(moto.start)
    gcp = CloudDnsFake()
    await gcp.start()
    knot = TsigKnot(
        require_binary("knotd"), require_binary("knotc"), tmp_path / "knot", free_port(),
        ["knot.test."], key_name=KEY_NAME, other_key_name="bystander-key.", secret=SECRET,
    )  # fmt: skip
    try:
        await asyncio.to_thread(knot.start)
        create_zone(moto, "r53.test.")
        gcp.add_zone("gcp-test", "gcp.test.")
        yield Backends(moto, gcp, knot)
    finally:
        await asyncio.to_thread(knot.stop)
        await gcp.stop()
        await asyncio.to_thread(moto.stop)


@pytest.fixture
async def broker(start_broker, tmp_path: Path, backends: Backends, monkeypatch) -> Running:
    account = json.dumps(backends.gcp.service_account())
    (tmp_path / "gcp.json").write_text(account)
    config = write_config(
        tmp_path,
        f"""
[providers.embedded]
type = "embedded"
[providers.aws]
type = "route53"
zones = ["r53.test"]
endpoint_url = "{backends.moto.url}"
access_key_id = "e2e"
secret_access_key = "env:E2E_AWS_SECRET"
poll_interval = 0.05
[providers.gcp]
type = "google"
project = "{backends.gcp.project}"
credentials = "file:{tmp_path / "gcp.json"}"
api_endpoint = "{backends.gcp.url}"
zones = ["gcp.test"]
poll_interval = 0.05
[providers.knot]
type = "rfc2136"
zones = ["knot.test"]
server = "127.0.0.1:{backends.knot.port}"
tsig_key_name = "{KEY_NAME}"
tsig_secret = "{SECRET}"
[propagation]
nameservers = {{ "knot.test" = ["127.0.0.1:{backends.knot.port}"] }}
""",
    )
    monkeypatch.setenv("E2E_AWS_SECRET", "e2e-secret")
    return await start_broker(load_settings(config, {}))


def route53_values(backends: Backends, name: str) -> list[str]:
    return route53_txt(backends.moto, name)


def gcp_values(backends: Backends, name: str) -> list[str]:
    rrset = backends.gcp.zones["gcp-test"].rrsets.get((name, "TXT"))
    return sorted(value.strip('"') for value in rrset["rrdatas"]) if rrset else []


async def knot_values(backends: Backends, name: str) -> list[str]:
    answer = await dns.asyncquery.udp(
        dns.message.make_query(name, "TXT"), "127.0.0.1", port=backends.knot.port, timeout=2
    )
    return sorted(b"".join(r.strings).decode() for rrset in answer.answer for r in rrset)


async def test_present_and_cleanup_reach_every_provider(
    broker: Running, backends: Backends, openapi
):
    api = Api(broker, openapi)
    token = await broker.token("ops", ["*.r53.test", "*.gcp.test", "*.knot.test", "*.example.test"])

    async def values(zone: str, name: str) -> list[str]:
        if zone == "r53.test":
            return await asyncio.to_thread(route53_values, backends, name)
        if zone == "gcp.test":
            return gcp_values(backends, name)
        if zone == "knot.test":
            return await knot_values(backends, name)
        return (await broker.txt(name))[1]

    for zone in ("r53.test", "gcp.test", "knot.test", "example.test"):
        name = f"_acme-challenge.www.{zone}."
        for value in VALUES:
            status, record = await api.call(
                "POST", "/v1/present", token, json={"domain": f"www.{zone}", "value": value}
            )
            assert status == 201, record
        assert await values(zone, name) == sorted(VALUES), zone
        status, body = await api.call(
            "POST", "/v1/cleanup", token, json={"domain": f"www.{zone}", "value": VALUES[0]}
        )
        assert (status, body["removed"]) == (200, True)
        assert await values(zone, name) == [VALUES[1]], zone


async def test_rfc2136_propagation_turns_ready_against_knot(broker: Running, openapi):
    api = Api(broker, openapi)
    token = await broker.token("ops", ["*.knot.test"])
    status, record = await api.call(
        "POST", "/v1/present", token,
        json={"domain": "api.knot.test", "value": VALUES[0], "wait": True, "timeout": 10},
    )  # fmt: skip
    assert status == 201, record
    assert record["provider"] == "knot"
    assert record["propagation"]["ready"] is True
    assert record["propagation"]["zone"] == "knot.test."


async def test_readyz_and_config_check_see_every_provider(broker: Running):
    status, body, _ = await broker.call("GET", "/readyz")
    assert status == 200, body
    assert {key for key in body["checks"] if key.startswith("provider:")} == {
        "provider:embedded",
        "provider:aws",
        "provider:gcp",
        "provider:knot",
    }
    assert all(check["ok"] for check in body["checks"].values())
