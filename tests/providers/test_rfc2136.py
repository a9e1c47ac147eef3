"""RFC 2136 against a real knotd on loopback that accepts TSIG-signed updates only."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
from pydantic import ValidationError

from broker.propagation import PropagationChecker, PropagationSettings
from providers.base import DnsProvider, ProviderAuthError
from providers.rfc2136 import Rfc2136Provider, Rfc2136Settings
from tests.peers import free_port
from tests.providers.contract import DEEP, NAME, SUBZONE, ZONE, Backend, BackendContract
from tests.providers.knot import TsigKnot
from tests.support import require_binary

KEY_NAME = "broker-key."
SECRET = base64.b64encode(b"broker-test-tsig-secret-32-bytes").decode()
WRONG_SECRET = base64.b64encode(b"a-wrong-tsig-secret-of-32-bytes!").decode()


class KnotBackend(Backend):
    throttles = False

    def __init__(self, knot: TsigKnot) -> None:
        self.knot = knot
        self.server = f"127.0.0.1:{knot.port}"
        self.key = dns.tsig.Key(KEY_NAME, SECRET, "hmac-sha256.")
        self.wrong_credentials = {"tsig_secret": WRONG_SECRET}
        self.unreachable = {"server": f"127.0.0.1:{free_port()}"}
        self.secrets = [SECRET, WRONG_SECRET]
        self.made: list[DnsProvider] = []

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "rfc2136",
            "zones": [ZONE, SUBZONE],
            "server": self.server,
            "tsig_key_name": "Broker-Key",
            "tsig_secret": SECRET,
            "timeout": 3,
            **overrides,
        }

    async def make_provider(self, **settings: Any) -> DnsProvider:
        provider = Rfc2136Provider(
            "rfc2136", Rfc2136Settings.model_validate(self.settings(**settings))
        )
        self.made.append(provider)
        await provider.open()
        return provider

    async def put_foreign(self, name: str, rdtype: str, values: list[str]) -> None:
        update = dns.update.UpdateMessage(ZONE)
        update.use_tsig(self.key)
        update.replace(name, 300, rdtype, *(f'"{v}"' if rdtype == "TXT" else v for v in values))
        response = await dns.asyncquery.tcp(update, "127.0.0.1", port=self.knot.port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR

    async def read(self, name: str, rdtype: str) -> list[str]:
        query = dns.message.make_query(name, rdtype)
        response = await dns.asyncquery.tcp(query, "127.0.0.1", port=self.knot.port, timeout=3)
        return sorted(
            b"".join(rdata.strings).decode() if rdtype == "TXT" else rdata.to_text()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.from_text(rdtype)
            for rdata in rrset
        )

    def throttle(self, calls: int) -> None:
        raise NotImplementedError("DNS servers do not throttle updates")

    def changes_submitted(self) -> int:
        return self.knot.updates_received()


@pytest.fixture
async def knot(tmp_path: Path) -> AsyncIterator[TsigKnot]:
    server = TsigKnot(
        require_binary("knotd"),
        require_binary("knotc"),
        tmp_path / "knot",
        free_port(),
        [ZONE, SUBZONE],
        key_name=KEY_NAME,
        other_key_name="bystander-key.",
        secret=SECRET,
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def backend(knot: TsigKnot) -> AsyncIterator[KnotBackend]:
    backend = KnotBackend(knot)
    try:
        yield backend
    finally:
        for provider in backend.made:
            await provider.close()


@pytest.fixture
async def provider(backend: KnotBackend) -> DnsProvider:
    return await backend.make_provider()


class TestRfc2136Contract(BackendContract):
    pass


async def test_a_wrong_secret_is_named_as_such(backend: KnotBackend):
    provider = await backend.make_provider(tsig_secret=WRONG_SECRET)
    with pytest.raises(ProviderAuthError, match=r"BADSIG.*tsig_secret or tsig_algorithm"):
        await provider.add_txt(ZONE, NAME, "one", 60)


async def test_a_key_the_server_does_not_know_is_named_as_such(backend: KnotBackend):
    provider = await backend.make_provider(tsig_key_name="nobody-key")
    with pytest.raises(
        ProviderAuthError, match=r"does not accept TSIG key nobody-key\. \(BADKEY\)"
    ):
        await provider.add_txt(ZONE, NAME, "one", 60)


async def test_a_key_the_policy_does_not_allow_is_an_auth_error(backend: KnotBackend):
    provider = await backend.make_provider(tsig_key_name="bystander-key")
    with pytest.raises(ProviderAuthError, match="bystander-key"):
        await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == []


async def test_unsigned_updates_are_refused(backend: KnotBackend):
    provider = await backend.make_provider(tsig_key_name=None, tsig_secret=None)
    with pytest.raises(ProviderAuthError, match=r"NOTAUTH.*configure tsig_key_name"):
        await provider.add_txt(ZONE, NAME, "one", 60)
    assert await backend.read(NAME, "TXT") == []


async def test_the_primary_is_found_from_the_soa_mname(backend: KnotBackend, knot: TsigKnot):
    provider = await backend.make_provider(server=None, resolvers=[backend.server], port=knot.port)
    await provider.check()
    await provider.add_txt(SUBZONE, DEEP, "one", 60)
    assert await provider.list_txt(SUBZONE, DEEP) == ["one"]


async def test_check_passes_with_the_right_key(provider: DnsProvider, backend: KnotBackend):
    await provider.check()
    assert await backend.read(ZONE, "TXT") == []


async def test_the_propagation_checker_sees_an_added_value(
    provider: DnsProvider, backend: KnotBackend
):
    await provider.add_txt(ZONE, NAME, "token-value", 60)
    checker = PropagationChecker(
        PropagationSettings(
            resolvers=[backend.server], nameservers={ZONE: [backend.server]}, timeout=10
        )
    )
    try:
        report = await checker.wait(NAME, "token-value", timeout=10)
    finally:
        await checker.close()
    assert report.ready, report.to_json()
    assert [(s.address, s.port, s.seen) for s in report.servers] == [
        ("127.0.0.1", backend.knot.port, True)
    ]


def test_zones_are_required():
    with pytest.raises(ValidationError, match="zones"):
        Rfc2136Settings.model_validate({"type": "rfc2136", "zones": []})


def test_a_key_needs_its_secret_and_the_secret_must_be_base64():
    with pytest.raises(ValidationError, match="both tsig_key_name and tsig_secret"):
        Rfc2136Settings.model_validate({"type": "rfc2136", "zones": [ZONE], "tsig_key_name": "k"})
    with pytest.raises(ValidationError, match="must be base64") as raised:
        Rfc2136Settings.model_validate(
            {"type": "rfc2136", "zones": [ZONE], "tsig_key_name": "k", "tsig_secret": "not base64!"}
        )
    assert "not base64!" not in str(raised.value)


def test_servers_are_addresses_with_optional_ports():
    settings = Rfc2136Settings.model_validate(
        {"type": "rfc2136", "zones": ["Example.Test"], "server": "::1", "resolvers": ["127.0.0.1"]}
    )
    assert settings.server == "[::1]:53"
    assert settings.resolvers == ["127.0.0.1:53"]
    assert settings.zone_names() == (ZONE,)
    with pytest.raises(ValidationError, match="not a server address"):
        Rfc2136Settings.model_validate({"type": "rfc2136", "zones": [ZONE], "server": "ns1.test"})
