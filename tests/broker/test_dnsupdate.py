"""RFC 2136 updates signed with a token's TSIG key, sent by dnspython to a running broker's
DNS listeners (UDP and TCP): what DNS-01 needs is applied, everything else refused with
the right code, and a refused update changes nothing."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from typing import Any

import dns.asyncquery
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig
import dns.update
import pytest

from broker.auth import issue_token
from broker.runtime import secret_box
from broker.tsig import TsigKey
from tests.support import Running, write_settings

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
OTHER = "x" * 43
NAME = "_acme-challenge.www.example.test."
ZONE = "example.test."


async def tsig_token(running: Running, name: str, scopes: list[str], **kw: Any) -> TsigKey:
    issued = issue_token(name, scopes, tsig=kw.pop("algorithm", "hmac-sha256"), **kw)
    await running.broker.store.create_token(issued.record)
    assert issued.tsig is not None
    return issued.tsig


def update(key: TsigKey | None, zone: str = ZONE) -> dns.update.UpdateMessage:
    if key is None:
        return dns.update.UpdateMessage(zone)
    return dns.update.UpdateMessage(
        zone, keyring=key.dnspython(), keyalgorithm=dns.name.from_text(key.algorithm)
    )


async def send(
    running: Running, message: dns.message.Message, *, tcp: bool = False
) -> dns.message.Message:
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    exchange = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await exchange(message, host, port=port, timeout=5)


async def send_raw(running: Running, wire: bytes) -> bytes:
    """Over TCP, as bytes: for messages dnspython would not send as they are."""
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(len(wire).to_bytes(2) + wire)
        await writer.drain()
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5))
        return await asyncio.wait_for(reader.readexactly(size), 5)
    finally:
        writer.close()


def tsig_error(response: dns.message.Message) -> int:
    assert response.tsig is not None
    rdata = response.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return int(rdata.error)


@pytest.mark.parametrize("tcp", [False, True])
async def test_a_signed_update_adds_and_deletes_values_as_present_and_cleanup_do(
    running: Running, tcp: bool
):
    key = await tsig_token(running, "web1", ["example.test", "*.example.test"])
    adding = update(key)
    adding.add(NAME, 60, "TXT", f'"{VALUE}"')
    adding.add("_acme-challenge.example.test.", 60, "TXT", f'"{OTHER}"')
    response = await send(running, adding, tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig  # the answer is signed with the same key (dnspython verified it)
    assert await running.txt(NAME) == ("NOERROR", [VALUE])
    assert await running.txt("_acme-challenge.example.test.") == ("NOERROR", [OTHER])
    records = await running.broker.store.live_at(NAME)
    assert [(r.owner, r.value) for r in records] == [("web1", VALUE)]

    again = update(key)
    again.add(NAME, 60, "TXT", f'"{VALUE}"')
    assert (await send(running, again, tcp=tcp)).rcode() == dns.rcode.NOERROR
    assert len(await running.broker.store.live_at(NAME)) == 1  # idempotent

    deleting = update(key)
    deleting.delete(NAME, "TXT", f'"{VALUE}"')
    assert (await send(running, deleting, tcp=tcp)).rcode() == dns.rcode.NOERROR
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_deleting_the_rrset_removes_only_this_tokens_values(running: Running):
    mine = await tsig_token(running, "web1", ["www.example.test"])
    theirs = await tsig_token(running, "web2", ["www.example.test"])
    for key, value in ((mine, VALUE), (theirs, OTHER)):
        adding = update(key)
        adding.add(NAME, 60, "TXT", f'"{value}"')
        assert (await send(running, adding)).rcode() == dns.rcode.NOERROR
    deleting = update(mine)
    deleting.delete(NAME, "TXT")
    assert (await send(running, deleting)).rcode() == dns.rcode.NOERROR
    assert await running.txt(NAME) == ("NOERROR", [OTHER])


def _out_of_scope(message: dns.update.UpdateMessage) -> None:
    message.add("_acme-challenge.other.example.test.", 60, "TXT", f'"{VALUE}"')


def _other_type(message: dns.update.UpdateMessage) -> None:
    message.add(NAME, 60, "A", "192.0.2.1")


def _delete_everything(message: dns.update.UpdateMessage) -> None:
    message.delete(NAME)


def _outside_the_zone(message: dns.update.UpdateMessage) -> None:
    message.add("_acme-challenge.www.other.test.", 60, "TXT", f'"{VALUE}"')


def _a_prerequisite(message: dns.update.UpdateMessage) -> None:
    message.present(NAME)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')


def _not_a_challenge_value(message: dns.update.UpdateMessage) -> None:
    message.add(NAME, 60, "TXT", '"two words"')


def _allowed_then_refused(message: dns.update.UpdateMessage) -> None:
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    message.add("_acme-challenge.other.example.test.", 60, "TXT", f'"{VALUE}"')


@pytest.mark.parametrize(
    ("build", "rcode"),
    [
        (_out_of_scope, dns.rcode.REFUSED),
        (_other_type, dns.rcode.REFUSED),
        (_delete_everything, dns.rcode.REFUSED),
        (_outside_the_zone, dns.rcode.NOTZONE),
        (_a_prerequisite, dns.rcode.REFUSED),
        (_not_a_challenge_value, dns.rcode.REFUSED),
        (_allowed_then_refused, dns.rcode.REFUSED),
    ],
)
async def test_what_dns01_does_not_need_is_refused_and_nothing_changes(
    running: Running, build: Callable[[dns.update.UpdateMessage], None], rcode: int
):
    key = await tsig_token(running, "web1", ["www.example.test"])
    message = update(key)
    build(message)
    response = await send(running, message)
    assert response.rcode() == rcode
    assert await running.broker.store.live_challenges() == []
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_a_zone_the_broker_does_not_route_is_notauth(running: Running):
    key = await tsig_token(running, "web1", ["www.example.test"])
    message = update(key, zone="elsewhere.test.")
    message.add("_acme-challenge.www.elsewhere.test.", 60, "TXT", f'"{VALUE}"')
    assert (await send(running, message)).rcode() == dns.rcode.NOTAUTH


async def test_an_update_that_fails_half_way_is_undone(start_broker, tmp_path):
    running = await start_broker(
        write_settings(tmp_path, "[challenges]\nmax_values_per_name = 1\n")
    )
    key = await tsig_token(running, "web1", ["www.example.test"])
    message = update(key)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    message.add(NAME, 60, "TXT", f'"{OTHER}"')  # over the cap of one value per name
    assert (await send(running, message)).rcode() == dns.rcode.REFUSED
    assert await running.broker.store.live_challenges() == []
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_an_unsigned_update_is_refused(running: Running):
    message = update(None)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    assert (await send(running, message)).rcode() == dns.rcode.REFUSED
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_unknown_key_is_badkey_and_wrong_secret_badsig(running: Running):
    key = await tsig_token(running, "web1", ["www.example.test"])
    for stranger, error in (
        (TsigKey("nobody.", "hmac-sha256", key.secret), dns.rcode.BADKEY),
        (TsigKey(key.name, "hmac-sha256", b"\x00" * 32), dns.rcode.BADSIG),
        (TsigKey(key.name, "hmac-sha512", key.secret), dns.rcode.BADKEY),
    ):
        message = update(stranger)
        message.add(NAME, 60, "TXT", f'"{VALUE}"')
        raw = await send_raw(running, message.to_wire())
        response = dns.message.from_wire(raw, keyring=False)
        assert response.rcode() == dns.rcode.NOTAUTH, stranger
        assert tsig_error(response) == error, stranger
        assert response.mac == b""  # unsigned: the server cannot (or will not) sign with it
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_a_skewed_clock_is_badtime_signed_with_the_servers_time(
    running: Running, monkeypatch: pytest.MonkeyPatch
):
    key = await tsig_token(running, "web1", ["www.example.test"])
    message = update(key)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    real_sign = dns.tsig.sign

    def signed_an_hour_ago(wire: bytes, key: Any, rdata: Any, time: Any = None, *a: Any, **kw: Any):
        return real_sign(wire, key, rdata, int(time) - 3600, *a, **kw)

    monkeypatch.setattr(dns.tsig, "sign", signed_an_hour_ago)
    wire = message.to_wire()
    monkeypatch.undo()
    response = dns.message.from_wire(await send_raw(running, wire), keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert tsig_error(response) == dns.rcode.BADTIME
    rdata = response.tsig[0]
    server_time = struct.unpack("!Q", b"\x00\x00" + rdata.other)[0]
    assert abs(server_time - rdata.time_signed) < 5  # the server's clock, an hour ahead
    assert response.mac != b""
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_a_revoked_tokens_key_is_unknown_and_an_expired_one_not_authorized(
    running: Running,
):
    key = await tsig_token(running, "web1", ["www.example.test"])
    await running.broker.store.revoke_token("web1", 1.0)
    message = update(key)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    response = dns.message.from_wire(await send_raw(running, message.to_wire()), keyring=False)
    assert tsig_error(response) == dns.rcode.BADKEY
    short = await tsig_token(running, "web2", ["www.example.test"], lifetime=0.2)
    await asyncio.sleep(0.3)
    message = update(short)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    assert (await send(running, message)).rcode() == dns.rcode.NOTAUTH
    assert await running.txt(NAME) == ("NXDOMAIN", [])


async def test_a_key_sealed_with_the_secret_key_works_and_is_not_kept_in_the_clear(
    start_broker, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BROKER_SECRET_KEY", "a key kept outside the database")
    settings = write_settings(tmp_path, DNS01_BROKER_AUTH__SECRET_KEY="env:BROKER_SECRET_KEY")
    running = await start_broker(settings)
    key = await tsig_token(running, "web1", ["www.example.test"], box=secret_box(settings))
    record = await running.broker.store.token_by_tsig(key.name)
    assert record is not None
    assert record.tsig_secret is not None
    assert record.tsig_secret.startswith("aesgcm:")
    assert key.secret_b64 not in record.tsig_secret
    message = update(key)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    assert (await send(running, message)).rcode() == dns.rcode.NOERROR
    assert await running.txt(NAME) == ("NOERROR", [VALUE])


def _signed_add(key: TsigKey) -> bytes:
    message = update(key)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    return message.to_wire()


def _with_counts(wire: bytes, additional: int) -> bytes:
    return wire[:10] + additional.to_bytes(2) + wire[12:]


async def test_malformed_updates_never_crash_the_server_nor_change_a_record(running: Running):
    key = await tsig_token(running, "web1", ["www.example.test"])
    good = _signed_add(key)
    tsig_start = len(_update_without_tsig())
    tsig_rr = good[tsig_start:]
    arcount = int.from_bytes(good[10:12])
    many = update(key)
    for index in range(600):
        many.add(f"_acme-challenge.h{index}.example.test.", 60, "TXT", f'"{VALUE}"')
    broken = [
        good[:-7],  # TSIG cut short
        good[: tsig_start + 5],  # TSIG owner only
        _with_counts(good + tsig_rr, arcount + 1),  # two TSIG records
        _with_counts(good + bytes.fromhex("0000010001000000000000"), arcount + 1),  # TSIG not last
        _with_counts(good, arcount + 3),  # counts promise more than there is
        good[:12],  # header only
        good[:5],  # not even a header
        many.to_wire(max_size=65535),  # 600 changes, none in scope
    ]
    rng = random.Random(20261203)
    for _ in range(300):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(12, len(mutated))] = rng.randrange(256)
        if mutated != good:
            broken.append(bytes(mutated))
    for wire in broken:
        for tcp in (False, True):
            response = await _send_either(running, wire, tcp=tcp)
            if response is not None:
                assert response[:2] == wire[:2]  # an answer to that message, not a crash
    # A mutation may still be the signed update (the key name's letter case is not signed):
    # then it did what the key's owner signed, and nothing else.
    live = await running.broker.store.live_challenges()
    assert {(r.fqdn, r.value, r.owner) for r in live} <= {(NAME, VALUE, "web1")}
    assert (await running.query(ZONE, "SOA")).rcode() == dns.rcode.NOERROR
    again = dns.message.from_wire(await send_raw(running, _signed_add(key)), keyring=False)
    assert again.rcode() == dns.rcode.NOERROR  # and it still takes a good update


def _update_without_tsig() -> bytes:
    message = update(None)
    message.add(NAME, 60, "TXT", f'"{VALUE}"')
    return message.to_wire()


async def _send_either(running: Running, wire: bytes, *, tcp: bool) -> bytes | None:
    if tcp:
        try:
            return await send_raw(running, wire)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(answer, 0.5)
    except TimeoutError:
        return None
    finally:
        transport.close()
