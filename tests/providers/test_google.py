"""Google Cloud DNS: the real google-cloud-dns client library against a local fake of
the REST API (tests/fakes/clouddns.py), with service-account tokens from its fake
token endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from pydantic import ValidationError

from providers.base import (
    DnsProvider,
    ProviderAuthError,
    ProviderUnavailableError,
    ZoneNotFoundError,
)
from providers.google import GoogleProvider, GoogleSettings
from tests.fakes.clouddns import CloudDnsFake, Zone
from tests.peers import free_port
from tests.providers.contract import DEEP, NAME, SUBZONE, ZONE, Backend, BackendContract


class GoogleBackend(Backend):
    def __init__(self, fake: CloudDnsFake) -> None:
        self.fake = fake
        self.account = fake.service_account()
        wrong = fake.service_account(known=False)
        self.wrong_credentials = {"credentials": json.dumps(wrong)}
        self.unreachable = {"api_endpoint": f"http://127.0.0.1:{free_port()}"}
        self.secrets = [
            line
            for info in (self.account, wrong)
            for line in info["private_key"].splitlines()[1:-1]
        ]
        self.made: list[DnsProvider] = []
        self.zone = fake.add_zone("example-test", ZONE)
        fake.add_zone("sub-example-test", SUBZONE, visibility="private")

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "google",
            "project": self.fake.project,
            "credentials": json.dumps(self.account),
            "api_endpoint": self.fake.url,
            "zones": [ZONE, SUBZONE],
            "max_attempts": 3,
            "backoff": 0.01,
            "poll_interval": 0.02,
            "timeout": 5,
            **overrides,
        }

    async def make_provider(self, **settings: Any) -> DnsProvider:
        provider = GoogleProvider(
            "google", GoogleSettings.model_validate(self.settings(**settings))
        )
        self.made.append(provider)
        await provider.open()
        return provider

    async def put_foreign(self, name: str, rdtype: str, values: list[str]) -> None:
        put(self.zone, name, rdtype, values)

    def raw(self, name: str, rdtype: str) -> list[str]:
        rrset = self.zone.rrsets.get((name, rdtype))
        return list(rrset["rrdatas"]) if rrset else []

    async def read(self, name: str, rdtype: str) -> list[str]:
        raw = self.raw(name, rdtype)
        if rdtype != "TXT":
            return sorted(raw)
        parsed = (dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text) for text in raw)
        return sorted(b"".join(rdata.strings).decode() for rdata in parsed)  # type: ignore[attr-defined]

    def throttle(self, calls: int) -> None:
        self.fake.fail("POST", r"/changes$", 429, "rateLimitExceeded", "Rate Limit Exceeded", calls)

    def changes_submitted(self) -> int:
        return self.fake.count("POST", "/changes")


def put(zone: Zone, name: str, rdtype: str, values: list[str], ttl: int = 300) -> None:
    rrdatas = [f'"{value}"' if rdtype == "TXT" else value for value in values]
    zone.rrsets[(name, rdtype)] = {
        "kind": "dns#resourceRecordSet", "name": name, "type": rdtype, "ttl": ttl,
        "rrdatas": rrdatas,
    }  # fmt: skip


@pytest.fixture
async def backend() -> AsyncIterator[GoogleBackend]:
    fake = CloudDnsFake()
    await fake.start()
    backend = GoogleBackend(fake)
    try:
        yield backend
    finally:
        for provider in backend.made:
            await provider.close()
        await fake.stop()


@pytest.fixture
async def provider(backend: GoogleBackend) -> DnsProvider:
    """Zones discovered by dnsName at open(): example.test public, sub.example.test private."""
    return await backend.make_provider(zones=[])


class TestGoogleContract(BackendContract):
    pass


async def test_discovery_pages_through_every_zone(backend: GoogleBackend):
    backend.fake.page_size = 1
    backend.fake.add_zone("z-other", "other.test.")
    provider = await backend.make_provider(zones=[])
    assert provider.zones() == ("example.test.", "other.test.", "sub.example.test.")


async def test_a_public_zone_wins_over_its_private_twin(backend: GoogleBackend):
    twin = backend.fake.add_zone("a-private-twin", ZONE, visibility="private")
    provider = await backend.make_provider(zones=[])
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]
    assert (NAME, "TXT") not in twin.rrsets


async def test_private_zones_can_be_left_out(backend: GoogleBackend):
    provider = await backend.make_provider(zones=[], private_zones=False)
    assert provider.zones() == (ZONE,)
    assert await provider.find_zone(DEEP) == ZONE


async def test_a_configured_zone_is_found_by_its_dns_name(backend: GoogleBackend):
    provider = await backend.make_provider(zones=["EXAMPLE.test"])
    assert provider.zones() == (ZONE,)
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]


async def test_a_write_racing_ours_is_read_again(provider: DnsProvider, backend: GoogleBackend):
    await provider.add_txt(ZONE, NAME, "one", 60)
    backend.fake.before_next_change.append(
        lambda zone: put(zone, NAME, "TXT", ["one", "racer"], ttl=60)
    )
    before = backend.changes_submitted()
    await provider.add_txt(ZONE, NAME, "two", 60)
    assert backend.changes_submitted() - before == 2  # 412 conditionNotMet, then done
    assert await backend.read(NAME, "TXT") == ["one", "racer", "two"]


async def test_a_create_racing_ours_is_read_again(provider: DnsProvider, backend: GoogleBackend):
    backend.fake.before_next_change.append(lambda zone: put(zone, NAME, "TXT", ["racer"]))
    await provider.add_txt(ZONE, NAME, "one", 60)  # 409 alreadyExists, then done
    assert await backend.read(NAME, "TXT") == ["one", "racer"]


async def test_a_removal_racing_ours_is_read_again(provider: DnsProvider, backend: GoogleBackend):
    await provider.add_txt(ZONE, NAME, "one", 60)
    await provider.add_txt(ZONE, NAME, "two", 60)
    backend.fake.before_next_change.append(lambda zone: zone.rrsets.pop((NAME, "TXT")))
    await provider.remove_txt(ZONE, NAME, "one")  # 404 on the deletion, then nothing to do
    assert await backend.read(NAME, "TXT") == []


async def test_endless_races_are_a_retryable_error(provider: DnsProvider, backend: GoogleBackend):
    await provider.add_txt(ZONE, NAME, "one", 60)
    for i in range(3):
        backend.fake.before_next_change.append(
            lambda zone, i=i: put(zone, NAME, "TXT", ["one", f"racer-{i}"], ttl=60)
        )
    with pytest.raises(ProviderUnavailableError, match="Precondition not met") as raised:
        await provider.add_txt(ZONE, NAME, "two", 60)
    assert raised.value.retryable


async def test_wait_applied_polls_until_done(provider: DnsProvider, backend: GoogleBackend):
    backend.fake.pending_polls = 3
    change = await provider.add_txt(ZONE, NAME, "one", 60)
    assert change is not None
    await asyncio.gather(*(provider.wait_applied(change) for _ in range(3)))
    assert backend.fake.count("GET", "/changes/1") == 4  # shared by the three waiters


async def test_a_change_that_stays_pending_is_a_retryable_error(backend: GoogleBackend):
    provider = await backend.make_provider(apply_timeout=0.2)
    backend.fake.pending_polls = 1000
    change = await provider.add_txt(ZONE, NAME, "one", 60)
    with pytest.raises(ProviderUnavailableError, match="still pending") as raised:
        await provider.wait_applied(change)
    assert raised.value.retryable


async def test_a_403_rate_limit_is_retried(provider: DnsProvider, backend: GoogleBackend):
    backend.fake.fail("POST", r"/changes$", 403, "userRateLimitExceeded", "User Rate Limit", 2)
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]


async def test_a_project_without_permission_is_an_auth_error(backend: GoogleBackend):
    provider = await backend.make_provider(project="someone-elses")
    with pytest.raises(ProviderAuthError, match="does not have permission"):
        await provider.check()


async def test_application_default_credentials(
    backend: GoogleBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(backend.account))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    provider = await backend.make_provider(credentials=None, project=None)
    await provider.check()
    await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == ["one"]


async def test_credentials_from_a_file_reference(backend: GoogleBackend, tmp_path: Path):
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(backend.account, indent=2))
    provider = await backend.make_provider(credentials=f"file:{key_file}")
    await provider.check()
    assert backend.fake.count("POST", "/token") == 1


async def test_a_zone_deleted_after_open_is_not_found(
    provider: DnsProvider, backend: GoogleBackend
):
    del backend.fake.zones["example-test"]
    with pytest.raises(ZoneNotFoundError):
        await provider.add_txt(ZONE, NAME, "one", 60)


async def test_txt_values_are_sent_quoted_and_split(provider: DnsProvider, backend: GoogleBackend):
    await provider.add_txt(ZONE, NAME, 'say "hi"', 60)
    await provider.add_txt(ZONE, NAME, "x" * 300, 60)
    assert sorted(backend.raw(NAME, "TXT")) == sorted(
        ['"say \\"hi\\""', f'"{"x" * 255}" "{"x" * 45}"']
    )


def test_credentials_that_are_not_json_are_a_config_error_naming_no_secret():
    with pytest.raises(ValidationError) as raised:
        GoogleSettings.model_validate({"type": "google", "credentials": "hunter2-not-json"})
    assert "credentials must be the JSON text" in str(raised.value)
    assert "hunter2" not in str(raised.value)


async def test_an_incomplete_key_file_is_an_auth_error(backend: GoogleBackend):
    incomplete = {k: v for k, v in backend.account.items() if k != "client_email"}
    with pytest.raises(ProviderAuthError, match="client_email"):
        await backend.make_provider(credentials=json.dumps(incomplete))
