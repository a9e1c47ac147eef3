"""Issuance against real pebble, which validates dns-01 by asking the broker's embedded
DNS server: the values are presented through the broker's native API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from broker.acme import (
    AcmeClient,
    AcmeEvent,
    AuthorizationFailedError,
    BrokerApiSolver,
    EventKind,
    KeyType,
    NotPropagatedError,
    PresentedChallenge,
    SignedCertificate,
    SolverError,
    UnauthorizedError,
    dns01_txt_value,
    generate_private_key,
    issue,
    load_private_key,
    make_csr,
    sign_csr,
)
from tests.broker.acme.conftest import MakeClient
from tests.peers import Pebble, free_dns_port, verify_chain
from tests.support import Running, write_settings

pytestmark = pytest.mark.timeout(90)

NAMES = ["*.example.test", "example.test"]


async def write_and_verify(
    pebble: Pebble, issued: SignedCertificate, tmp_path: Path, names: set[str]
) -> None:
    leaf, chain = tmp_path / "cert.pem", tmp_path / "chain.pem"
    leaf.write_text(issued.certificate_pem)
    chain.write_text(issued.chain_pem)
    await verify_chain(pebble, leaf, chain, names)


async def assert_nothing_left(running: Running) -> None:
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])
    assert await running.broker.store.live_challenges() == []


async def test_wildcard_and_apex_certificate_verifies_against_the_pebble_root(
    running: Running, pebble: Pebble, client: AcmeClient, solver: BrokerApiSolver, tmp_path: Path
):
    events: list[AcmeEvent] = []
    issued = await issue(client, NAMES, solver, on_event=events.append)

    await write_and_verify(pebble, issued, tmp_path, set(NAMES))
    assert issued.fullchain_pem == issued.certificate_pem + issued.chain_pem
    assert set(issued.names) == set(NAMES)
    assert issued.not_before < issued.not_after
    key = load_private_key(issued.private_key_pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    leaf = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    assert leaf.public_key() == key.public_key()
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "*.example.test"
    kinds = [event.kind for event in events]
    assert kinds[0] is EventKind.ORDER_CREATED
    assert kinds[-1] is EventKind.CERTIFICATE_DOWNLOADED
    for kind in (EventKind.AUTHORIZATION_PENDING, EventKind.PRESENTING, EventKind.PROPAGATED,
                 EventKind.CHALLENGE_ANSWERED, EventKind.AUTHORIZATION_VALID,
                 EventKind.CLEANED_UP):  # fmt: skip
        assert sorted(e.domain or "" for e in events if e.kind is kind) == sorted(NAMES), kind
    assert kinds.index(EventKind.CLEANED_UP) < kinds.index(EventKind.FINALIZING)
    await assert_nothing_left(running)


class BarrierSolver:
    """Delegates to the broker, but confirms propagation of a value only once every
    expected value has been presented: a client that answered challenges one after
    another would never get past the first."""

    def __init__(self, inner: BrokerApiSolver, expected: int) -> None:
        self.inner = inner
        self.expected = expected
        self.presented = 0
        self.all_presented = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def present(self, domain: str, value: str) -> PresentedChallenge:
        handle = await self.inner.present(domain, value)
        self.presented += 1
        if self.presented == self.expected:
            self.all_presented.set()
        return handle

    async def wait_propagated(self, handle: PresentedChallenge, seconds: float) -> None:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            async with asyncio.timeout(10):
                await self.all_presented.wait()
        except TimeoutError:
            raise NotPropagatedError(handle.domain, "the other challenge never came") from None
        finally:
            self.waiting -= 1
        await self.inner.wait_propagated(handle, seconds)

    async def cleanup(self, handle: PresentedChallenge) -> None:
        await self.inner.cleanup(handle)


async def test_challenges_of_an_order_are_answered_in_parallel(
    running: Running, pebble: Pebble, client: AcmeClient, solver: BrokerApiSolver, tmp_path: Path
):
    names = ["*.example.test", "example.test", "www.example.test"]
    barrier = BarrierSolver(solver, expected=len(names))
    events: list[AcmeEvent] = []
    issued = await issue(client, names, barrier, on_event=events.append)

    await write_and_verify(pebble, issued, tmp_path, set(names))
    assert barrier.most_waiting == len(names)
    kinds = [event.kind for event in events]
    last_presenting = max(i for i, k in enumerate(kinds) if k is EventKind.PRESENTING)
    first_answered = kinds.index(EventKind.CHALLENGE_ANSWERED)
    assert last_presenting < first_answered
    assert await running.txt("_acme-challenge.www.example.test") == ("NXDOMAIN", [])
    await assert_nothing_left(running)


async def test_a_callers_csr_is_signed_without_its_key_leaving_the_caller(
    running: Running, pebble: Pebble, client: AcmeClient, solver: BrokerApiSolver, tmp_path: Path
):
    key = generate_private_key(KeyType.EC384)
    csr = make_csr(key, ["www.example.test", "*.example.test"])
    signed = await sign_csr(client, csr, solver)

    await write_and_verify(pebble, signed, tmp_path, {"www.example.test", "*.example.test"})
    leaf = x509.load_pem_x509_certificate(signed.certificate_pem.encode())
    assert leaf.public_key() == key.public_key()
    assert not hasattr(signed, "private_key_pem")
    await assert_nothing_left(running)


async def test_rsa_certificate_key_with_an_rs256_account(
    pebble: Pebble, make_client: MakeClient, solver: BrokerApiSolver, tmp_path: Path
):
    client = await make_client(KeyType.RSA2048)
    assert client.key.algorithm == "RS256"
    issued = await issue(client, ["example.test"], solver, KeyType.RSA2048)

    await write_and_verify(pebble, issued, tmp_path, {"example.test"})
    key = load_private_key(issued.private_key_pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


class WrongValueSolver:
    """Presents a different (well-formed) value than the one asked for."""

    def __init__(self, inner: BrokerApiSolver) -> None:
        self.inner = inner

    async def present(self, domain: str, value: str) -> PresentedChallenge:
        return await self.inner.present(domain, dns01_txt_value("not-" + value))

    async def wait_propagated(self, handle: PresentedChallenge, seconds: float) -> None:
        await self.inner.wait_propagated(handle, seconds)

    async def cleanup(self, handle: PresentedChallenge) -> None:
        await self.inner.cleanup(handle)


async def test_a_value_pebble_cannot_find_fails_the_authorization_and_is_cleaned_up(
    running: Running, client: AcmeClient, solver: BrokerApiSolver
):
    events: list[AcmeEvent] = []
    with pytest.raises(AuthorizationFailedError) as failed:
        await issue(client, NAMES, WrongValueSolver(solver), on_event=events.append)

    assert failed.value.identifier in NAMES
    assert failed.value.status == "invalid"
    assert isinstance(failed.value.problem, UnauthorizedError)
    assert failed.value.problem.type == "urn:ietf:params:acme:error:unauthorized"
    assert failed.value.identifier in str(failed.value)
    assert EventKind.AUTHORIZATION_INVALID in {event.kind for event in events}
    assert EventKind.FINALIZING not in {event.kind for event in events}
    assert {e.domain for e in events if e.kind is EventKind.CLEANED_UP} == set(NAMES)
    await assert_nothing_left(running)


class StallingSolver:
    """Presents, then never confirms propagation (until cancelled)."""

    def __init__(self, inner: BrokerApiSolver, expected: int) -> None:
        self.inner = inner
        self.expected = expected
        self.presented = 0
        self.all_presented = asyncio.Event()

    async def present(self, domain: str, value: str) -> PresentedChallenge:
        handle = await self.inner.present(domain, value)
        self.presented += 1
        if self.presented == self.expected:
            self.all_presented.set()
        return handle

    async def wait_propagated(self, handle: PresentedChallenge, seconds: float) -> None:
        await asyncio.Event().wait()

    async def cleanup(self, handle: PresentedChallenge) -> None:
        await self.inner.cleanup(handle)


async def test_cancelling_an_issuance_still_removes_every_value(
    running: Running, client: AcmeClient, solver: BrokerApiSolver
):
    stalling = StallingSolver(solver, expected=len(NAMES))
    events: list[AcmeEvent] = []
    task = asyncio.create_task(issue(client, NAMES, stalling, on_event=events.append))
    await asyncio.wait_for(stalling.all_presented.wait(), 30)
    assert len((await running.txt("_acme-challenge.example.test"))[1]) == 2

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {e.domain for e in events if e.kind is EventKind.CLEANED_UP} == set(NAMES)
    await assert_nothing_left(running)


async def test_a_name_outside_the_token_scope_is_a_solver_error(
    running: Running, client: AcmeClient
):
    token = await running.token("narrow", ["www.example.test"])
    async with BrokerApiSolver(running.url, token) as narrow:
        with pytest.raises(SolverError) as failed:
            await issue(client, ["example.test"], narrow)
    assert failed.value.status == 403
    assert failed.value.code == "forbidden-name"
    assert failed.value.domain == "example.test"
    await assert_nothing_left(running)


async def test_a_value_not_served_by_every_nameserver_is_not_propagated_and_is_removed(
    start_broker: Callable[..., Awaitable[Running]], client: AcmeClient, tmp_path: Path
):
    own, silent = free_dns_port(), free_dns_port()
    servers = f'["127.0.0.1:{own}", "127.0.0.1:{silent}"]'
    (tmp_path / "lagging").mkdir()
    lagging = await start_broker(
        write_settings(
            tmp_path / "lagging",
            f'[propagation]\nquery_timeout = 0.2\nnameservers = {{ "example.test" = {servers} }}\n',
            DNS01_BROKER_DNS__LISTEN=f"127.0.0.1:{own}",
        )
    )
    token = await lagging.token("acme", ["example.test"])
    events: list[AcmeEvent] = []
    async with BrokerApiSolver(lagging.url, token) as solver:
        with pytest.raises(NotPropagatedError) as failed:
            await issue(client, ["example.test"], solver, on_event=events.append,
                        propagation_timeout=1)  # fmt: skip
    assert isinstance(failed.value, TimeoutError)
    assert failed.value.status == 504
    assert f"127.0.0.1:{silent}" in str(failed.value)
    assert EventKind.CHALLENGE_ANSWERED not in {event.kind for event in events}
    assert await lagging.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])
