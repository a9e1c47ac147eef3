"""Alternate chains (pebble with PEBBLE_ALTERNATE_ROOTS=1 links them with rel="alternate")
and revocation by the account key, both against real pebble."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from broker.acme import (
    AcmeClient,
    AlreadyRevokedError,
    BadRevocationReasonError,
    BrokerApiSolver,
    ParsedChain,
    issue,
    revoke,
)
from tests.broker.acme.conftest import MakeClient, PebbleStarter
from tests.peers import Pebble, run
from tests.support import require_binary

pytestmark = pytest.mark.timeout(90)

NAMES = ["*.example.test", "example.test"]


async def management_get(pebble: Pebble, path: str) -> aiohttp.ClientResponse:
    url = f"https://127.0.0.1:{pebble.management_port}{path}"
    async with aiohttp.ClientSession() as session:
        response = await session.get(url, ssl=pebble.ssl_context())
        await response.read()
        return response


async def root_certificate(pebble: Pebble, index: int) -> x509.Certificate:
    response = await management_get(pebble, f"/roots/{index}")
    return x509.load_pem_x509_certificate(await response.read())


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def openssl_verify(root_pem: str, chain_pem: str, leaf_pem: str, directory: Path) -> str:
    (directory / "root.pem").write_text(root_pem)
    (directory / "chain.pem").write_text(chain_pem)
    (directory / "leaf.pem").write_text(leaf_pem)
    return await run(
        require_binary("openssl"), "verify", "-CAfile", str(directory / "root.pem"),
        "-untrusted", str(directory / "chain.pem"), str(directory / "leaf.pem"),
    )  # fmt: skip


async def test_preferred_chain_is_chosen_by_issuer_name_among_the_alternates(
    start_pebble: PebbleStarter, make_client: MakeClient, solver: BrokerApiSolver, tmp_path: Path
):
    ca = await start_pebble(env={"PEBBLE_ALTERNATE_ROOTS": "1"})
    client = await make_client(ca=ca)
    default_root, other_root = await root_certificate(ca, 0), await root_certificate(ca, 1)
    assert common_name(default_root) != common_name(other_root)

    issued = await issue(client, NAMES, solver, preferred_chain=common_name(other_root))
    assert issued.issuer == common_name(other_root)
    other_pem = other_root.public_bytes(serialization.Encoding.PEM).decode()
    verdict = await openssl_verify(other_pem, issued.chain_pem, issued.certificate_pem, tmp_path)
    assert verdict.strip().endswith(": OK"), verdict

    chains = await client.certificate_chains(issued.url)
    assert len(chains) == 2
    assert chains[0].alternates == (chains[1].url,)
    parsed = [ParsedChain.from_pem(chain.pem) for chain in chains]
    assert [chain.top_issuer for chain in parsed] == [
        common_name(default_root),
        common_name(other_root),
    ]
    assert {chain.leaf for chain in parsed} == {
        x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    }


async def test_unknown_preferred_chain_falls_back_to_the_default_chain(
    start_pebble: PebbleStarter, make_client: MakeClient, solver: BrokerApiSolver
):
    ca = await start_pebble(env={"PEBBLE_ALTERNATE_ROOTS": "1"})
    client = await make_client(ca=ca)
    issued = await issue(client, ["example.test"], solver, preferred_chain="No Such Root")
    assert issued.issuer == common_name(await root_certificate(ca, 0))


async def test_revoked_certificate_is_reported_revoked_and_cannot_be_revoked_again(
    pebble: Pebble, client: AcmeClient, solver: BrokerApiSolver
):
    issued = await issue(client, NAMES, solver)
    serial = format(
        x509.load_pem_x509_certificate(issued.certificate_pem.encode()).serial_number, "x"
    )

    with pytest.raises(BadRevocationReasonError):
        await revoke(client, issued.certificate_pem, reason=7)
    await revoke(client, issued.fullchain_pem, reason=4)

    status = await (await management_get(pebble, f"/cert-status-by-serial/{serial}")).json()
    assert (status["Status"], status["Reason"]) == ("Revoked", 4)
    with pytest.raises(AlreadyRevokedError) as again:
        await revoke(client, issued.certificate_pem)
    assert again.value.code == "alreadyRevoked"
