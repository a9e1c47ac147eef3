"""Route53 against moto in server mode on loopback, behind a proxy that counts calls and
plays Throttling, refused keys and PENDING changes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from pydantic import ValidationError

from broker.config import load_settings
from providers import load_provider_type
from providers.base import DnsProvider, ProviderUnavailableError, ZoneNotFoundError
from providers.route53 import Route53Provider, Route53Settings
from tests.peers import free_port
from tests.providers.aws import MotoServer, Route53Proxy
from tests.providers.contract import DEEP, NAME, SUBZONE, ZONE, Backend, BackendContract

KEY, SECRET = "AKIDBROKERTEST", "broker-test-secret-0123456789"
WRONG_SECRET = "revoked-secret-9876543210"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Route53Backend(Backend):
    def __init__(self, moto: MotoServer, proxy: Route53Proxy) -> None:
        self.moto = moto
        self.proxy = proxy
        self.direct = boto3.client(
            "route53",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="direct",
            aws_secret_access_key="direct",
        )
        self.wrong_credentials = {"access_key_id": "AKIDREVOKED", "secret_access_key": WRONG_SECRET}
        self.unreachable = {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
        self.secrets = [SECRET, WRONG_SECRET]
        self.zone_ids: dict[str, str] = {}
        self.made: list[DnsProvider] = []
        proxy.refused_keys.add("AKIDREVOKED")

    def create_zone(self, name: str, *, private: bool = False) -> str:
        extra: Any = {}
        if private:
            extra = {
                "HostedZoneConfig": {"PrivateZone": True, "Comment": "private"},
                "VPC": {"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"},
            }
        zone = self.direct.create_hosted_zone(
            Name=name, CallerReference=f"{name}-{private}-{len(self.zone_ids)}", **extra
        )["HostedZone"]
        return zone["Id"].removeprefix("/hostedzone/")

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "route53",
            "endpoint_url": self.proxy.url,
            "access_key_id": KEY,
            "secret_access_key": SECRET,
            "zones": [ZONE, SUBZONE],
            "max_attempts": 3,
            "backoff": 0.01,
            "poll_interval": 0.02,
            "timeout": 5,
            **overrides,
        }

    async def make_provider(self, **settings: Any) -> DnsProvider:
        provider = Route53Provider(
            "route53", Route53Settings.model_validate(self.settings(**settings))
        )
        self.made.append(provider)
        await provider.open()
        return provider

    async def put_foreign(self, name: str, rdtype: str, values: list[str]) -> None:
        records = [{"Value": f'"{value}"' if rdtype == "TXT" else value} for value in values]
        rrset: Any = {"Name": name, "Type": rdtype, "TTL": 300, "ResourceRecords": records}
        await asyncio.to_thread(
            self.direct.change_resource_record_sets,
            HostedZoneId=self.zone_ids[ZONE],
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]},
        )

    async def raw(self, name: str, rdtype: str, zone_id: str | None = None) -> list[str]:
        page = await asyncio.to_thread(
            self.direct.list_resource_record_sets, HostedZoneId=zone_id or self.zone_ids[ZONE]
        )
        return [
            record["Value"]
            for rrset in page["ResourceRecordSets"]
            if rrset["Name"] == name and rrset["Type"] == rdtype
            for record in rrset.get("ResourceRecords", [])
        ]

    async def read(self, name: str, rdtype: str) -> list[str]:
        raw = await self.raw(name, rdtype)
        if rdtype != "TXT":
            return sorted(raw)
        parsed = (dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text) for text in raw)
        return sorted(b"".join(rdata.strings).decode() for rdata in parsed)  # type: ignore[attr-defined]

    def throttle(self, calls: int) -> None:
        self.proxy.throttled = calls

    def changes_submitted(self) -> int:
        return self.proxy.count("ChangeResourceRecordSets")


@pytest.fixture
async def backend(moto: MotoServer) -> AsyncIterator[Route53Backend]:
    await moto.reset()
    proxy = Route53Proxy(moto.url)
    await proxy.start()
    backend = Route53Backend(moto, proxy)
    backend.zone_ids[ZONE] = backend.create_zone(ZONE)
    backend.zone_ids[SUBZONE] = backend.create_zone(SUBZONE, private=True)
    try:
        yield backend
    finally:
        for provider in backend.made:
            await provider.close()
        await proxy.stop()


@pytest.fixture
async def provider(backend: Route53Backend) -> DnsProvider:
    """Zones discovered at open(): example.test public, sub.example.test private."""
    return await backend.make_provider(zones=[])


class TestRoute53Contract(BackendContract):
    pass


async def test_discovery_prefers_the_public_zone_of_a_name(backend: Route53Backend):
    private_twin = backend.create_zone(ZONE, private=True)
    provider = await backend.make_provider(zones=[])
    assert provider.zones() == (ZONE, SUBZONE)
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]
    assert await backend.raw(NAME, "TXT", private_twin) == []


async def test_private_zones_can_be_left_out(backend: Route53Backend):
    provider = await backend.make_provider(zones=[], private_zones=False)
    assert provider.zones() == (ZONE,)
    assert await provider.find_zone(DEEP) == ZONE


async def test_configured_zones_are_looked_up_on_first_use(backend: Route53Backend):
    provider = await backend.make_provider(zones=["Example.Test"])
    assert provider.zones() == (ZONE,)
    assert backend.proxy.calls == []
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]
    with pytest.raises(ZoneNotFoundError, match=r"does not serve zone sub\.example\.test\."):
        await provider.add_txt(SUBZONE, DEEP, "one", 60)


async def test_explicit_credentials_sign_every_call(provider: DnsProvider, backend: Route53Backend):
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert backend.proxy.calls
    assert {key for _, key in backend.proxy.calls} == {KEY}


async def test_credentials_from_env_and_file_references(
    backend: Route53Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("BROKER_R53_KEY", "AKIDFROMREF")
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    provider = await backend.make_provider(
        access_key_id="env:BROKER_R53_KEY", secret_access_key=f"file:{secret}"
    )
    await provider.check()
    assert {key for _, key in backend.proxy.calls} == {"AKIDFROMREF"}


async def test_the_standard_chain_is_used_without_explicit_keys(
    backend: Route53Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMCHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    provider = await backend.make_provider(access_key_id=None, secret_access_key=None)
    await provider.check()
    assert {key for _, key in backend.proxy.calls} == {"AKIDFROMCHAIN"}


async def test_an_assumed_role_signs_route53_calls(backend: Route53Backend):
    role = "arn:aws:iam::123456789012:role/dns01-broker"
    provider = await backend.make_provider(role_arn=role, external_id="ext-id")
    await provider.add_txt(ZONE, NAME, "one", 60)
    (first, first_key), *rest = backend.proxy.calls
    assert (first, first_key) == ("AssumeRole", KEY)
    assumed_keys = {key for _, key in rest}
    assert len(assumed_keys) == 1
    assert KEY not in assumed_keys
    assert await backend.read(NAME, "TXT") == ["one"]


async def test_prior_request_not_complete_is_retried(
    provider: DnsProvider, backend: Route53Backend
):
    backend.proxy.throttle_code = "PriorRequestNotComplete"
    backend.proxy.throttled = 2
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert backend.proxy.count("ChangeResourceRecordSets") == 3
    assert await backend.read(NAME, "TXT") == ["one"]


async def test_wait_applied_polls_until_insync(provider: DnsProvider, backend: Route53Backend):
    change = await provider.add_txt(ZONE, NAME, "one", 60)
    assert change is not None
    backend.proxy.pending_polls = 3
    await asyncio.gather(*(provider.wait_applied(change) for _ in range(5)))
    assert backend.proxy.count("GetChange") == 4  # shared by the five waiters


async def test_a_change_that_stays_pending_is_a_retryable_error(backend: Route53Backend):
    provider = await backend.make_provider(apply_timeout=0.2)
    change = await provider.add_txt(ZONE, NAME, "one", 60)
    backend.proxy.pending_polls = 1000
    with pytest.raises(ProviderUnavailableError, match="still PENDING") as raised:
        await provider.wait_applied(change)
    assert raised.value.retryable


async def test_txt_values_are_sent_quoted_and_split(provider: DnsProvider, backend: Route53Backend):
    await provider.add_txt(ZONE, NAME, 'say "hi"', 60)
    await provider.add_txt(ZONE, NAME, "x" * 300, 60)
    assert sorted(await backend.raw(NAME, "TXT")) == sorted(
        ['"say \\"hi\\""', f'"{"x" * 255}" "{"x" * 45}"']
    )


async def test_foreign_encodings_of_existing_values_are_kept(
    provider: DnsProvider, backend: Route53Backend
):
    await backend.put_foreign(NAME, "TXT", ['two" "strings'])  # written as "two" "strings"
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert sorted(await provider.list_txt(ZONE, NAME)) == ["one", "twostrings"]
    assert '"two" "strings"' in await backend.raw(NAME, "TXT")


async def test_a_missing_zone_is_reported_by_check(backend: Route53Backend):
    provider = await backend.make_provider(zones=["missing.test"])
    with pytest.raises(
        ZoneNotFoundError, match=r"no public or private hosted zone named missing\.test\."
    ):
        await provider.check()


def test_settings_need_both_keys_or_neither():
    with pytest.raises(ValidationError, match="both access_key_id and secret_access_key"):
        Route53Settings(type="route53", access_key_id="AKID")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="either profile"):
        Route53Settings.model_validate(
            {"type": "route53", "profile": "p", "access_key_id": "a", "secret_access_key": "s"}
        )


def test_two_accounts_in_one_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROD_SECRET", SECRET)
    config = tmp_path / "broker.toml"
    config.write_text(
        """
[acmedns]
enabled = false

[providers.aws-prod]
type = "route53"
zones = ["example.com"]
access_key_id = "AKIDPROD"
secret_access_key = "env:PROD_SECRET"

[providers.aws-lab]
type = "route53"
zones = ["lab.example.net"]
role_arn = "arn:aws:iam::123456789012:role/dns"
"""
    )
    settings = load_settings(config, env={})
    prod, lab = settings.providers["aws-prod"], settings.providers["aws-lab"]
    assert isinstance(prod, Route53Settings)
    assert prod.secret_access_key is not None
    assert prod.secret_access_key.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert lab.zone_names() == ("lab.example.net.",)


def test_a_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "providers.route53")
    with pytest.raises(ImportError, match=r"pip install 'dns01-broker\[route53\]'"):
        load_provider_type("route53")
