"""No one gets in: one table of tricky names, tried on every face that writes or reads a
challenge (native present, cleanup, propagation, challenges, certificates; lego httpreq in
default and RAW mode; acme-dns /update; RFC 2136 updates signed with a token's TSIG key).

Every row states its outcome: allowed (and where the value lands), or the exact error
code. A refusal must also leave the store's live records and the embedded zones exactly
as they were; values are seeded beforehand at every name a row could reach, so a refused
cleanup that removed one would show. The broker serves every zone a tricky name falls in
(``badexample.com``, ``evil.test``, the look-alikes), so a refusal is the scope's doing,
not the want of a zone. Each test walks its whole table and reports every wrong row.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.acme.csr import make_csr
from broker.auth import Principal, issue_token
from broker.dnsname import ChallengeTarget, normalize_name
from broker.dnsserver import DnsServer
from broker.errors import BrokerError
from broker.tsig import TsigKey
from providers.embedded import EmbeddedProvider, EmbeddedSettings, EmbeddedZoneSettings, ZoneSet
from tests.support import Api, OpenApi, Running, write_settings

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
SEED = "S" * 43
"""The value seeded at every name a row could reach, before each row."""
OK = "ok"
ZONES = (
    "example.com",
    "badexample.com",
    "evil.test",
    "xn--exmple-cua.com",  # exámple.com
    "xn--exmple-4nf.com",  # "ex\u0430mple.com", with a Cyrillic a
)
SCOPES = {
    "exact": ["example.com"],
    "wild": ["*.example.com"],
    "idn": ["bücher.example.com"],
}
ADMIN = Principal(name="seeder", scopes=(), admin=True)
LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 33]) + ".example.com"
"""237 octets: the longest name whose challenge name (254 with its dot) is still a name."""


def zones_toml(*extra: str) -> str:
    tables = "".join(f'[[providers.embedded.zones]]\nname = "{z}"\n' for z in ZONES)
    return '[providers.embedded]\ntype = "embedded"\n' + tables + "".join(extra)


@dataclass(frozen=True, slots=True)
class Row:
    token: str
    name: str
    outcome: str
    """``ok`` or the problem code of the refusal."""
    at: str = ""
    """Where an allowed write lands."""

    def __str__(self) -> str:
        return f"{self.token} {self.name!r} -> {self.outcome}"


def ok(token: str, name: str, at: str) -> Row:
    return Row(token, name, OK, at)


def no(token: str, name: str, code: str = "forbidden-name") -> Row:
    return Row(token, name, code)


AT_APEX = "_acme-challenge.example.com."
AT_A = "_acme-challenge.a.example.com."

DOMAIN_ROWS = (
    # exact scope: the name and its wildcard, whatever the spelling
    ok("exact", "example.com", AT_APEX),
    ok("exact", "*.example.com", AT_APEX),
    ok("exact", "EXAMPLE.com", AT_APEX),
    ok("exact", "Example.COM.", AT_APEX),
    ok("exact", "example\u3002com", AT_APEX),  # ideographic full stop: an IDNA dot
    ok("exact", "example\uff0ecom.", AT_APEX),  # full-width full stop
    # full-width letters map to ASCII (UTS 46)
    ok("exact", "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", AT_APEX),
    ok("exact", " example.com\n", AT_APEX),  # surrounding whitespace is trimmed
    no("exact", "a.example.com"),
    no("exact", "badexample.com"),
    no("exact", "example.com.evil.test"),
    no("exact", "xn--exmple-cua.com"),
    no("exact", "ex\u0430mple.com"),  # Cyrillic a (U+0430): xn--exmple-4nf.com
    no("exact", "exámple.com"),
    # wildcard scope: strictly below, at any depth; never the apex
    ok("wild", "a.example.com", AT_A),
    ok("wild", "*.a.example.com", AT_A),
    ok("wild", "A.Example.Com.", AT_A),
    ok("wild", "a.example\u3002com", AT_A),
    ok("wild", "x.y.example.com", "_acme-challenge.x.y.example.com."),
    ok("wild", LONGEST, f"_acme-challenge.{LONGEST}."),
    no("wild", "example.com"),
    no("wild", "*.example.com"),
    no("wild", "EXAMPLE.COM."),
    no("wild", "example\u3002com"),
    no("wild", "badexample.com"),
    no("wild", "a.badexample.com"),
    no("wild", "a.example.com.evil.test"),
    no("wild", "a.ex\u0430mple.com"),
    # internationalized scope: U-label and A-label are one name
    ok("idn", "bücher.example.com", "_acme-challenge.xn--bcher-kva.example.com."),
    ok("idn", "xn--bcher-kva.example.com", "_acme-challenge.xn--bcher-kva.example.com."),
    ok("idn", "BÜCHER.example.com", "_acme-challenge.xn--bcher-kva.example.com."),
    no("idn", "bucher.example.com"),
    # names that are no names
    no("exact", "", "invalid-name"),
    no("exact", ".", "invalid-name"),
    no("exact", "example.com..", "invalid-name"),
    no("exact", "example..com", "invalid-name"),
    no("exact", ".example.com", "invalid-name"),
    no("wild", "a..example.com", "invalid-name"),
    no("wild", "*.*.example.com", "invalid-name"),
    no("wild", "a*.example.com", "invalid-name"),
    no("wild", "a" * 64 + ".example.com", "invalid-name"),
    no("wild", "a" + LONGEST, "invalid-name"),  # 238 octets: no room for the challenge label
    no("wild", ".".join(["a" * 63] * 4) + ".example.com", "invalid-name"),  # > 253 octets
    no("exact", "_acme-challenge.example.com", "invalid-name"),
    no("wild", "_acme-challenge._acme-challenge.a.example.com", "invalid-name"),
    no("exact", "example.com\x00", "invalid-name"),
    no("exact", "example.com\x00.evil.test", "invalid-name"),
    no("exact", "exa mple.com", "invalid-name"),
    no("exact", "example.com\t.evil.test", "invalid-name"),
    no("exact", "xn--example-.com", "invalid-name"),  # not a punycode label
)

FQDN_ROWS = (
    ok("exact", "_acme-challenge.example.com.", AT_APEX),
    ok("exact", "_acme-challenge.example.com", AT_APEX),
    ok("exact", "_ACME-Challenge.EXAMPLE.com.", AT_APEX),
    ok("exact", "_acme-challenge.example\u3002com.", AT_APEX),
    no("exact", "_acme-challenge.a.example.com."),
    no("exact", "_acme-challenge.badexample.com."),
    no("exact", "_acme-challenge.example.com.evil.test."),
    no("exact", "_acme-challenge.xn--exmple-cua.com."),
    no("exact", "_acme-challenge.ex\u0430mple.com."),
    # the challenge label twice is the challenge of the name "_acme-challenge.example.com":
    # below example.com, so the wildcard scope's, never the exact one's
    no("exact", "_acme-challenge._acme-challenge.example.com."),
    ok("wild", "_acme-challenge._acme-challenge.example.com.", "_acme-challenge." + AT_APEX),
    ok("wild", "_acme-challenge.a.example.com.", AT_A),
    no("wild", "_acme-challenge.example.com."),
    no("wild", "_acme-challenge.a.badexample.com."),
    no("exact", "_acme-challenge..example.com.", "invalid-name"),
    no("exact", "_acme-challenge.example.com..", "invalid-name"),
    no("exact", "_acme-challenge.*.example.com.", "invalid-name"),
    no("exact", "_acme-challenge.example.com\x00.", "invalid-name"),
    no("wild", "_acme-challenge." + "a" * 64 + ".example.com.", "invalid-name"),
    no("wild", "_acme-challenge.a" + LONGEST + ".", "invalid-name"),
)

STRICT_FQDN_ROWS = (
    *FQDN_ROWS,
    no("exact", "example.com.", "invalid-name"),  # not a challenge name
    no("exact", "*.example.com", "invalid-name"),
)
"""The native API and the propagation check take challenge names only."""

LEGO_FQDN_ROWS = (
    *FQDN_ROWS,
    # lego sends the end of a CNAME chain: taken only when a CNAME from a name in scope
    # leads there; the scope example.com never writes a TXT at example.com itself (a site
    # verification record would prove the domain to others)
    no("exact", "example.com."),
    no("exact", "Example.COM"),
    no("wild", "a.example.com."),
    no("wild", "example.com."),
    no("exact", "badexample.com."),
    no("exact", "*.example.com", "invalid-name"),
)
"""lego httpreq (default mode) and RFC 2136 updates also take delegation targets."""


class Matrix:
    """A broker serving every zone of the table, tokens per scope, and the checks."""

    def __init__(self, running: Running, tokens: dict[str, str]) -> None:
        self.running = running
        self.tokens = tokens
        self.wrong: list[str] = []

    @property
    def store(self) -> Any:
        return self.running.broker.store

    async def state(self) -> tuple[Any, ...]:
        """Every live record, whole, and every TXT value of every embedded zone."""
        records = sorted(
            (r.id, r.fqdn, r.value, r.owner, r.expires_at, r.state.value)
            for r in await self.store.live_challenges()
        )
        served = sorted(
            (name, tuple(sorted(zone.txt_values(name))))
            for zone in self.running.broker.zone_set.zones()
            for name in zone.txt_names()
        )
        return tuple(records), tuple(served)

    async def seed(self, rows: tuple[Row, ...], *, names: Callable[[str], str | None]) -> None:
        """SEED at every name a row could write, allowed or not (when it is a name)."""
        service = self.running.broker.service
        for row in rows:
            fqdn = row.at or names(row.name)
            if fqdn is None:
                continue
            target = ChallengeTarget(base=fqdn.partition(".")[2] or fqdn, fqdn=fqdn)
            try:
                await service.present(ADMIN, target, SEED, None)
            except BrokerError:
                continue  # a name in no zone of the broker: nothing there to protect

    async def reset(self, fqdn: str, value: str) -> None:
        """Undo an allowed row: ``value`` at ``fqdn`` goes, SEED is there again."""
        service = self.running.broker.service
        target = ChallengeTarget(base=fqdn.partition(".")[2] or fqdn, fqdn=fqdn)
        await service.cleanup(ADMIN, target, value)
        await service.present(ADMIN, target, SEED, None)

    async def live(self, fqdn: str) -> list[tuple[str, str]]:
        return sorted((r.value, r.owner) for r in await self.store.live_at(fqdn))

    def fail(self, face: str, row: Row, got: object) -> None:
        self.wrong.append(f"{face}: {row}: got {got}")

    async def refused(self, face: str, row: Row, before: tuple[Any, ...], code: object) -> None:
        if code != row.outcome:
            self.fail(face, row, code)
        elif await self.state() != before:
            self.fail(face, row, f"{code}, but the store or the zone changed")

    async def written(self, face: str, row: Row, value: str) -> None:
        """An allowed present: ``value`` at ``row.at``, by the row's token, served."""
        if (value, row.token) not in await self.live(row.at):
            self.fail(face, row, f"no record of {value} at {row.at}")
        elif value not in self._served(row.at):
            self.fail(face, row, f"{value} not served at {row.at}")
        await self.reset(row.at, value)

    async def removed(self, face: str, row: Row) -> None:
        """An allowed cleanup: the seeded value at ``row.at`` is gone."""
        if (SEED, "seeder") in await self.live(row.at) or SEED in self._served(row.at):
            self.fail(face, row, f"SEED still at {row.at}")
        await self.reset(row.at, SEED)

    def _served(self, fqdn: str) -> list[str]:
        zone = self.running.broker.zone_set.find(dns.name.from_text(fqdn))
        return [] if zone is None else zone.txt_values(fqdn)

    def check(self) -> None:
        assert not self.wrong, "rows that went wrong:\n" + "\n".join(self.wrong)


async def make_matrix(running: Running) -> Matrix:
    tokens = {name: await running.token(name, scopes) for name, scopes in SCOPES.items()}
    return Matrix(running, tokens)


@pytest.fixture
def api(matrix: Matrix, openapi: OpenApi) -> Api:
    """Calls to the matrix's broker, every answer checked against openapi.yaml."""
    return Api(matrix.running, openapi)


@pytest.fixture
async def matrix(start_broker: Any, tmp_path: Path) -> Matrix:
    settings = write_settings(
        tmp_path, zones_toml('[acme]\ndirectory = "https://127.0.0.1:1/directory"\n')
    )
    return await make_matrix(await start_broker(settings))


def domain_fqdn(name: str) -> str | None:
    try:
        return ChallengeTarget.from_domain(name).fqdn
    except BrokerError:
        return None


def fqdn_fqdn(name: str) -> str | None:
    try:
        return ChallengeTarget.from_fqdn(name).fqdn
    except BrokerError:
        return None


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"lego:{token}".encode()).decode()}


def near(secret: str) -> str:
    """A wrong secret sharing all but its last character with ``secret``."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def code_of(status: int, body: Any) -> str:
    return body["code"] if isinstance(body, dict) and "code" in body else f"HTTP {status}"


NativeCall = Callable[[Matrix, Row, dict[str, Any]], Awaitable[tuple[int, Any]]]


async def walk_native(
    matrix: Matrix, api: Api, rows: tuple[Row, ...], field: str, names: Callable[[str], str | None]
) -> None:
    """Present, then cleanup, of every row through the native API."""
    await matrix.seed(rows, names=names)
    for path, value, good in (("/v1/present", VALUE, 201), ("/v1/cleanup", SEED, 200)):
        for row in rows:
            before = await matrix.state()
            body = {field: row.name, "value": value}
            status, answer = await api.call("POST", path, matrix.tokens[row.token], json=body)
            face = f"POST {path} {field}"
            if row.outcome != OK:
                await matrix.refused(face, row, before, code_of(status, answer))
            elif status != good:
                matrix.fail(face, row, f"{status} {answer}")
            elif path == "/v1/present":
                await matrix.written(face, row, VALUE)
            else:
                await matrix.removed(face, row)
    matrix.check()


async def test_native_present_and_cleanup_by_domain(matrix: Matrix, api: Api):
    await walk_native(matrix, api, DOMAIN_ROWS, "domain", domain_fqdn)


async def test_native_present_and_cleanup_by_fqdn(matrix: Matrix, api: Api):
    await walk_native(matrix, api, STRICT_FQDN_ROWS, "fqdn", fqdn_fqdn)


async def test_propagation_check_only_in_scope(matrix: Matrix, api: Api):
    for field, rows in (("domain", DOMAIN_ROWS), ("fqdn", STRICT_FQDN_ROWS)):
        for row in rows:
            before = await matrix.state()
            params = {field: row.name, "value": VALUE}
            status, body, _ = await matrix.running.call(
                "GET", "/v1/propagation?" + urlencode(params), matrix.tokens[row.token]
            )
            api.spec.check("GET", "/v1/propagation", status, body)
            face = f"GET /v1/propagation {field}"
            if row.outcome != OK:
                await matrix.refused(face, row, before, code_of(status, body))
            elif status != 200 or body["fqdn"] != row.at:
                matrix.fail(face, row, f"{status} {body}")
    matrix.check()


async def walk_httpreq(matrix: Matrix, rows: tuple[Row, ...], raw: bool) -> None:
    running = matrix.running
    await matrix.seed(rows, names=domain_fqdn if raw else fqdn_fqdn)
    key_auth = "token-abc.thumbprint"
    digest = hashlib.sha256(key_auth.encode()).digest()
    raw_value = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    for action in ("present", "cleanup"):
        for row in rows:
            if raw:
                body: dict[str, str] = {"domain": row.name, "token": "t", "keyAuth": key_auth}
            else:
                body = {"fqdn": row.name, "value": VALUE if action == "present" else SEED}
            before = await matrix.state()
            async with running.session.post(
                f"{running.url}/{action}",
                data=json.dumps(body),
                headers=basic(matrix.tokens[row.token]),
            ) as response:
                status, text = response.status, await response.text()
            face = f"httpreq {'RAW ' if raw else ''}{action}"
            answer = json.loads(text)
            if row.outcome != OK:
                await matrix.refused(face, row, before, code_of(status, answer))
            elif (status, answer) != (200, body):
                matrix.fail(face, row, f"{status} {text}")
            elif action == "present":
                await matrix.written(face, row, raw_value if raw else VALUE)
            elif raw:
                await matrix.reset(row.at, raw_value)  # cleaning a value never presented
            else:
                await matrix.removed(face, row)
    matrix.check()


async def test_httpreq_default_mode(matrix: Matrix):
    await walk_httpreq(matrix, LEGO_FQDN_ROWS, raw=False)


async def test_httpreq_raw_mode(matrix: Matrix):
    await walk_httpreq(matrix, DOMAIN_ROWS, raw=True)


def _csr(names: list[str]) -> str:
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), names)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


CSR_ROWS = (
    (["example.com", "*.example.com"], "exact", OK),
    (["EXAMPLE.com"], "exact", OK),
    (["a.example.com", "*.a.example.com"], "wild", OK),
    (["xn--bcher-kva.example.com"], "idn", OK),
    (["badexample.com"], "exact", "forbidden-name"),
    (["example.com", "a.example.com"], "exact", "forbidden-name"),  # one name outside
    (["example.com.evil.test"], "exact", "forbidden-name"),
    (["xn--exmple-cua.com"], "exact", "forbidden-name"),
    (["xn--exmple-4nf.com"], "exact", "forbidden-name"),
    (["*.example.com"], "wild", "forbidden-name"),
    (["example.com"], "wild", "forbidden-name"),
    (["a.example.com", "badexample.com"], "wild", "forbidden-name"),
    (["a..example.com"], "wild", "invalid-name"),
    (["a" * 64 + ".example.com"], "wild", "invalid-name"),
)


async def test_certificate_orders_only_for_names_in_scope(matrix: Matrix, api: Api):
    """Every CSR name is checked before any ACME call (the CA here is unreachable: an
    accepted order fails later, which is not this test's business)."""
    for names, token, outcome in CSR_ROWS:
        row = Row(token, ",".join(names), outcome)
        before = await matrix.state()
        orders = {o.id for o in await matrix.store.pending_orders()}
        status, body = await api.call(
            "POST", "/v1/certificates", matrix.tokens[token], json={"csr": _csr(names)}
        )
        if outcome == OK:
            if status != 202 or body["names"] != [n.lower() for n in names]:
                matrix.fail("POST /v1/certificates", row, f"{status} {body}")
            continue
        await matrix.refused("POST /v1/certificates", row, before, code_of(status, body))
        new = {o.id for o in await matrix.store.pending_orders()} - orders
        if new:
            matrix.fail("POST /v1/certificates", row, f"{status}, but orders {new} were made")
    matrix.check()


async def test_challenges_are_visible_only_to_tokens_covering_them(matrix: Matrix, api: Api):
    service = matrix.running.broker.service
    ids = {}
    for domain in ("example.com", "a.example.com", "badexample.com", "xn--bcher-kva.example.com"):
        result = await service.present(ADMIN, ChallengeTarget.from_domain(domain), SEED, None)
        ids[domain] = result.record.id
    rows = (
        ("exact", "example.com", 200),
        ("exact", "a.example.com", 404),
        ("exact", "badexample.com", 404),
        ("wild", "a.example.com", 200),
        ("wild", "example.com", 404),
        ("wild", "badexample.com", 404),
        ("idn", "xn--bcher-kva.example.com", 200),
        ("idn", "example.com", 404),
    )
    for token, domain, expected in rows:
        status, body = await api.call(
            "GET",
            f"/v1/challenges/{ids[domain]}",
            matrix.tokens[token],
            template="/v1/challenges/{id}",
        )
        if status != expected or (status == 404 and body["code"] != "not-found"):
            matrix.wrong.append(f"GET challenge of {domain} with {token}: {status} {body}")
    matrix.check()


# ---------------------------------------------------------------------------- RFC 2136


@dataclass(frozen=True, slots=True)
class DnsRow:
    token: str
    name: str
    rcode: str
    """``NOERROR`` (allowed), an rcode, or ``unsendable``: dnspython will not build it."""
    at: str = ""


DNS_ROWS = (
    DnsRow("exact", "_acme-challenge.example.com.", "NOERROR", AT_APEX),
    DnsRow("exact", "_ACME-CHALLENGE.Example.COM.", "NOERROR", AT_APEX),
    DnsRow("exact", "example.com.", "REFUSED"),  # the apex itself: never (as httpreq)
    DnsRow("exact", "_acme-challenge.a.example.com.", "REFUSED"),
    DnsRow("exact", "_acme-challenge.badexample.com.", "REFUSED"),
    DnsRow("exact", "_acme-challenge.example.com.evil.test.", "REFUSED"),
    DnsRow("exact", "_acme-challenge.xn--exmple-cua.com.", "REFUSED"),
    DnsRow("exact", "_acme-challenge.ex\u0430mple.com.", "REFUSED"),  # dnspython IDNA-encodes
    DnsRow("exact", "_acme-challenge._acme-challenge.example.com.", "REFUSED"),
    DnsRow("exact", "_acme-challenge.example\\000.com.", "NOTZONE"),  # a NUL octet: no zone's
    DnsRow("wild", "_acme-challenge.a\\000.example.com.", "REFUSED"),  # ... in the zone
    DnsRow("wild", "_acme-challenge.a\\.b.example.com.", "REFUSED"),  # a dot inside a label
    DnsRow("wild", "_acme-challenge.a\\032b.example.com.", "REFUSED"),  # a space inside
    DnsRow("wild", "_acme-challenge.a\\010.example.com.", "REFUSED"),  # a newline inside
    DnsRow("exact", "_acme-challenge.*.example.com.", "REFUSED"),
    DnsRow("wild", "_acme-challenge.a.example.com.", "NOERROR", AT_A),
    DnsRow("wild", "_acme-challenge.example.com.", "REFUSED"),
    DnsRow("wild", "a.example.com.", "REFUSED"),  # not by suffix
    DnsRow("wild", "_acme-challenge.a.badexample.com.", "REFUSED"),
    DnsRow("exact", "_acme-challenge..example.com.", "unsendable"),
    DnsRow("wild", "_acme-challenge." + "a" * 64 + ".example.com.", "unsendable"),
    DnsRow("wild", "_acme-challenge.a" + LONGEST + ".", "unsendable"),
)


async def tsig_keys(running: Running) -> dict[str, TsigKey]:
    keys = {}
    for name, scopes in SCOPES.items():
        issued = issue_token(f"{name}-dns", scopes, tsig="hmac-sha256")
        await running.broker.store.create_token(issued.record)
        assert issued.tsig is not None
        keys[name] = issued.tsig
    return keys


def signed_update(key: TsigKey, name: dns.name.Name, value: str, *, delete: bool) -> Any:
    zone = next(
        (
            z
            for z in sorted(ZONES, key=len, reverse=True)
            if name.is_subdomain(dns.name.from_text(z))
        ),
        "example.com",
    )
    message = dns.update.UpdateMessage(
        zone, keyring=key.dnspython(), keyalgorithm=dns.name.from_text(key.algorithm)
    )
    if delete:
        message.delete(name, "TXT", f'"{value}"')
    else:
        message.add(name, 60, "TXT", f'"{value}"')
    return message


async def test_rfc2136_updates_only_in_scope(matrix: Matrix):
    running = matrix.running
    keys = await tsig_keys(running)
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    for row in DNS_ROWS:
        if row.at:
            await matrix.seed((Row(row.token, row.name, OK, row.at),), names=lambda _: None)
        else:
            await matrix.seed((Row(row.token, row.name, "x"),), names=_wire_fqdn)
    for delete in (False, True):
        for row in DNS_ROWS:
            face = "RFC 2136 " + ("delete" if delete else "add")
            as_row = Row(f"{row.token}-dns", row.name, row.rcode, row.at)
            try:
                name = dns.name.from_text(row.name)
            except dns.exception.DNSException as exc:
                if row.rcode != "unsendable":
                    matrix.fail(face, as_row, f"dnspython refused it: {exc}")
                continue
            if row.rcode == "unsendable":
                matrix.fail(face, as_row, "dnspython built it")
                continue
            before = await matrix.state()
            message = signed_update(keys[row.token], name, SEED if delete else VALUE, delete=delete)
            response = await dns.asyncquery.tcp(message, host, port=port, timeout=5)
            rcode = dns.rcode.to_text(response.rcode())
            if row.rcode != "NOERROR":
                await matrix.refused(face, Row(as_row.token, row.name, row.rcode), before, rcode)
            elif rcode != "NOERROR":
                matrix.fail(face, as_row, rcode)
            elif delete:
                await matrix.removed(face, Row(f"{row.token}-dns", row.name, OK, row.at))
            else:
                await matrix.written(face, Row(f"{row.token}-dns", row.name, OK, row.at), VALUE)
    for token, key in keys.items():  # a token's key never reads a zone whole
        for zone in ZONES:
            for kind in ("AXFR", "IXFR"):
                query = dns.message.make_query(zone, kind)
                query.use_tsig(key.dnspython(), algorithm=dns.name.from_text(key.algorithm))
                answer = await dns.asyncquery.tcp(query, host, port=port, timeout=5)
                if answer.rcode() != dns.rcode.REFUSED or answer.answer:
                    matrix.wrong.append(f"signed {kind} of {zone} by {token}: {answer}")
    matrix.check()


def _wire_fqdn(text: str) -> str | None:
    """The name a DNS row writes at, as the broker would read it (None: no name)."""
    try:
        return normalize_name(dns.name.from_text(text).to_text())
    except (dns.exception.DNSException, BrokerError):
        return None


# ----------------------------------------------------------------------------- acme-dns


async def register(matrix: Matrix) -> dict[str, str]:
    status, body, _ = await matrix.running.call("POST", "/register")
    assert status == 201, body
    return dict(body)


async def test_acmedns_accounts_write_only_their_own_subdomain(matrix: Matrix):
    running = matrix.running
    mine, theirs = await register(matrix), await register(matrix)
    at = {who["subdomain"]: who["fulldomain"] + "." for who in (mine, theirs)}
    for fqdn in at.values():
        await matrix.reset(fqdn, VALUE)
    key = mine["password"]
    rows = (
        (mine["username"], key, mine["subdomain"], 200),
        (mine["username"].upper(), key, mine["subdomain"], 200),  # one UUID, however spelt
        (mine["username"], key, theirs["subdomain"], 401),
        (theirs["username"], key, theirs["subdomain"], 401),
        (theirs["username"], key, mine["subdomain"], 401),
        (mine["username"], near(key), mine["subdomain"], 401),
        (mine["username"], key + "x", mine["subdomain"], 401),
        (mine["username"], key[:-1], mine["subdomain"], 401),
        (mine["username"], matrix.tokens["wild"], mine["subdomain"], 401),
        (mine["username"], key, mine["subdomain"].upper(), 401),
        (mine["username"], key, mine["subdomain"] + ".", 401),
        (mine["username"], key, mine["fulldomain"], 401),
        (mine["username"], key, mine["subdomain"] + "\x00", 401),
        (mine["username"], key, "", 401),
    )
    for user, password, subdomain, expected in rows:
        who = f"{user[:8]} key={password[-3:]!r}"
        row = Row(who, subdomain, OK if expected == 200 else "forbidden", at.get(subdomain, ""))
        before = await matrix.state()
        status, body, _ = await running.call(
            "POST",
            "/update",
            headers={"X-Api-User": user, "X-Api-Key": password},
            json={"subdomain": subdomain, "txt": VALUE},
        )
        if expected != 200:
            got = body.get("error") if status == 401 else f"{status} {body}"
            await matrix.refused("acme-dns /update", row, before, got)
        elif (status, body) != (200, {"txt": VALUE}):
            matrix.fail("acme-dns /update", row, f"{status} {body}")
        elif (VALUE, f"acmedns:{mine['username']}") not in await matrix.live(row.at):
            matrix.fail("acme-dns /update", row, f"no record at {row.at}")
        else:
            await matrix.reset(row.at, VALUE)
    # a token never reaches a registration's name by suffix, on any face that could
    wild = matrix.tokens["wild"]
    target = at[theirs["subdomain"]]
    before = await matrix.state()
    async with running.session.post(
        f"{running.url}/present", json={"fqdn": target, "value": VALUE}, headers=basic(wild)
    ) as response:
        code = code_of(response.status, await response.json(content_type=None))
    await matrix.refused("httpreq present", no("wild", target), before, code)
    keys = await tsig_keys(running)
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    message = signed_update(keys["wild"], dns.name.from_text(target), VALUE, delete=False)
    response = await dns.asyncquery.tcp(message, host, port=port, timeout=5)
    got = dns.rcode.to_text(response.rcode())
    await matrix.refused("RFC 2136 add", no("wild-dns", target, "REFUSED"), before, got)
    matrix.check()


# --------------------------------------------------------------------- admin-only routes


async def test_only_admins_manage_tokens_and_registrations(matrix: Matrix, api: Api):
    """A scoped token cannot widen itself or anyone: every management route is 403
    admin-required, and nothing changes."""
    running = matrix.running
    account = await register(matrix)
    store = matrix.store
    revoked = await running.token("revoked", ["*.example.com"])
    await store.revoke_token("revoked", time.time())

    async def management() -> tuple[Any, ...]:
        tokens = sorted(
            (t.name, t.scopes, t.admin, t.revoked_at)
            for t in await store.list_tokens(include_revoked=True)
        )
        registrations = sorted(r.username for r in await store.list_registrations())
        return tuple(tokens), tuple(registrations), await matrix.state()

    user = account["username"]
    calls = (
        ("POST", "/v1/tokens", "/v1/tokens", {"name": "wider", "allow": ["*.com"]}),
        ("POST", "/v1/tokens", "/v1/tokens", {"name": "boss", "admin": True}),
        ("POST", "/v1/tokens", "/v1/tokens", {"name": "exact", "allow": ["*.example.com"]}),
        ("GET", "/v1/tokens", "/v1/tokens", None),
        ("GET", "/v1/tokens?all=true", "/v1/tokens", None),
        ("DELETE", "/v1/tokens/exact", "/v1/tokens/{name}", None),
        ("DELETE", "/v1/tokens/wild", "/v1/tokens/{name}", None),
        ("GET", "/v1/registrations", "/v1/registrations", None),
        ("DELETE", f"/v1/registrations/{user}", "/v1/registrations/{username}", None),
    )
    real = matrix.tokens["wild"]
    credentials = (
        (matrix.tokens["exact"], "admin-required"),
        (real, "admin-required"),
        (None, "unauthorized"),
        (revoked, "unauthorized"),
        (near(real), "unauthorized"),
        (real + "x", "unauthorized"),
        (near(running.admin_token), "unauthorized"),
    )
    for token, code in credentials:
        for method, path, template, body in calls:
            before = await management()
            status, answer = await api.call(method, path, token, template=template, json=body)
            if code_of(status, answer) != code or await management() != before:
                matrix.wrong.append(f"{method} {path} with {code}-token: {status} {answer}")
    matrix.check()
    # and the admin token does pass (the refusals above were not for another reason)
    status, _ = await api.call("GET", "/v1/tokens", running.admin_token)
    assert status == 200


# -------------------------------------------------------------------- CNAME delegation
#
# A CNAME at _acme-challenge.<name> sends the value to its target. CNAMEs in the broker's
# own zones are the operator's; a CNAME found in DNS belongs to whoever holds that name,
# which is the token's holder: through it, a token must reach nothing it could not write
# itself (another name's challenge, an acme-dns account's name, a target it does not name).

OPERATOR_TARGET = "d420c923-bbd7-4056-ab64-c3ca54c9b3cf.auth.example.com."
TENANT = "tenant.test"


@pytest.fixture
async def tenant_dns() -> AsyncIterator[tuple[ZoneSet, DnsServer]]:
    """The token holder's own authoritative server for tenant.test, on loopback."""
    zone_set = ZoneSet()
    EmbeddedProvider(
        "tenant", EmbeddedSettings(zones=[EmbeddedZoneSettings(name=TENANT)]), zone_set
    )
    server = DnsServer(zone_set, [("127.0.0.1", 0)])
    await server.start()
    yield zone_set, server
    await server.stop()


def cname(zone_set: ZoneSet, name: str, target: str) -> None:
    zone = zone_set.find(dns.name.from_text(name))
    assert zone is not None
    zone.add_static(dns.rrset.from_text(name, 300, "IN", "CNAME", target))


async def test_what_a_token_may_write_through_a_cname(
    start_broker: Any, tmp_path: Path, tenant_dns: tuple[ZoneSet, DnsServer]
):
    tenant, server = tenant_dns
    host, port = server.addresses[0]
    settings = write_settings(
        tmp_path, zones_toml(f'[propagation]\nresolvers = ["{host}:{port}"]\n')
    )
    running = await start_broker(settings)
    matrix = Matrix(running, {})
    account = await register(matrix)
    registered = account["fulldomain"] + "."
    cname(running.broker.zone_set, "_acme-challenge.app.example.com.", OPERATOR_TARGET)
    # the operator's CNAME into the tenant's DNS, which goes on from there
    cname(running.broker.zone_set, "_acme-challenge.ext.example.com.", f"hop.{TENANT}.")
    cname(tenant, f"hop.{TENANT}.", "_acme-challenge.victim.example.com.")
    for label, target in (
        ("steal", "_acme-challenge.victim.example.com."),  # another name's challenge
        ("hijack", registered),  # an acme-dns account's name
        ("shared", OPERATOR_TARGET),  # a name the token does not name
        ("launder", "_acme-challenge.app.example.com."),  # on through the operator's CNAME
        ("mine", "mine.delegated.example.com."),  # named in the token's scope: its own
    ):
        cname(tenant, f"_acme-challenge.{label}.{TENANT}.", target)
    scopes = {
        "tenant": [f"{n}.{TENANT}" for n in ("steal", "hijack", "shared", "launder", "mine")]
        + ["mine.delegated.example.com"],
        "app": ["app.example.com"],
        "ext": ["ext.example.com"],
        "wild": ["*.example.com"],
    }
    matrix.tokens = {name: await running.token(name, allow) for name, allow in scopes.items()}
    rows = (
        no("tenant", f"steal.{TENANT}"),
        no("tenant", f"hijack.{TENANT}"),
        no("tenant", f"shared.{TENANT}"),
        no("tenant", f"launder.{TENANT}"),
        ok("tenant", f"mine.{TENANT}", "mine.delegated.example.com."),
        ok("app", "app.example.com", OPERATOR_TARGET),  # the operator's CNAME is trusted
        no("ext", "ext.example.com"),  # ... but not what follows it in the tenant's DNS
        ok("wild", "x.app.example.com", "_acme-challenge.x.app.example.com."),
    )
    ends = {
        f"steal.{TENANT}": "_acme-challenge.victim.example.com.",
        f"hijack.{TENANT}": registered,
        f"shared.{TENANT}": OPERATOR_TARGET,
        f"launder.{TENANT}": OPERATOR_TARGET,
        "ext.example.com": "_acme-challenge.victim.example.com.",
    }
    for fqdn in {*ends.values(), OPERATOR_TARGET, "mine.delegated.example.com."}:
        await matrix.reset(fqdn, VALUE)
    keys = {}
    for name, allow in scopes.items():
        issued = issue_token(f"{name}-dns", allow, tsig="hmac-sha256")
        await running.broker.store.create_token(issued.record)
        assert issued.tsig is not None
        keys[name] = issued.tsig
    for row in rows:
        end = row.at or ends.get(row.name, f"_acme-challenge.{row.name}.")
        for face in ("native", "httpreq", "httpreq RAW", "RFC 2136"):
            before = await matrix.state()
            if face == "RFC 2136":
                code = await _signed_write(running, keys[row.token], end)
                as_row = Row(
                    f"{row.token}-dns", row.name, "REFUSED" if row.outcome != OK else OK, row.at
                )
            else:
                code = await _delegated_write(
                    running, face, matrix.tokens[row.token], row.name, end
                )
                as_row = row
            if as_row.outcome != OK:
                await matrix.refused(face, as_row, before, code)
            elif code != OK:
                matrix.fail(face, as_row, code)
            else:
                await matrix.written(face, as_row, _raw_value() if face == "httpreq RAW" else VALUE)
    matrix.check()


def _raw_value() -> str:
    digest = hashlib.sha256(b"token-abc.thumbprint").digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def _delegated_write(running: Running, face: str, token: str, domain: str, end: str) -> str:
    """Present ``domain``'s challenge as each face's clients do: native and RAW name the
    domain; lego (httpreq default mode) and RFC 2136 clients follow the CNAME themselves
    and write at its end. Returns ``ok`` or the refusal's code."""
    if face == "native":
        status, body, _ = await running.call(
            "POST", "/v1/present", token, json={"domain": domain, "value": VALUE}
        )
        return OK if status in (200, 201) else code_of(status, body)
    if face == "httpreq":
        body = {"fqdn": end, "value": VALUE}
    else:
        body = {"domain": domain, "token": "t", "keyAuth": "token-abc.thumbprint"}
    async with running.session.post(
        f"{running.url}/present", data=json.dumps(body), headers=basic(token)
    ) as response:
        answer = await response.json(content_type=None)
        return OK if response.status == 200 else code_of(response.status, answer)


async def _signed_write(running: Running, key: TsigKey, end: str) -> str:
    """An RFC 2136 client's write at the end of the chain: ``ok`` or the rcode."""
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    message = signed_update(key, dns.name.from_text(end), VALUE, delete=False)
    response = await dns.asyncquery.tcp(message, host, port=port, timeout=5)
    rcode = dns.rcode.to_text(response.rcode())
    return OK if rcode == "NOERROR" else rcode


# ------------------------------------------------------------------ source-bound tokens


async def test_source_bound_credentials_ignore_forwarded_for_from_untrusted_peers(
    matrix: Matrix, api: Api
):
    """No trusted proxy is configured: an X-Forwarded-For naming an allowed network is
    ignored on every face, and a credential bound elsewhere writes nothing."""
    running = matrix.running
    await matrix.reset(AT_APEX, VALUE)
    spoof = {"X-Forwarded-For": "10.1.2.3"}
    bound = await running.token("net", ["example.com"], cidrs=["10.0.0.0/8"])
    here = await running.token("here", ["example.com"], cidrs=["127.0.0.1/32"])
    account = await register(matrix)
    async with running.session.post(
        f"{running.url}/register", json={"allowfrom": ["10.0.0.0/8"]}
    ) as response:
        fenced = await response.json(content_type=None)
    present = {"domain": "example.com", "value": VALUE}
    fenced_key = {"X-Api-User": fenced["username"], "X-Api-Key": fenced["password"]}
    attempts: tuple[tuple[str, str, dict[str, str], Any, str], ...] = (
        ("native", "/v1/present", {"Authorization": f"Bearer {bound}"}, present,
         "forbidden-source"),
        ("httpreq", "/present", basic(bound), {"fqdn": AT_APEX, "value": VALUE},
         "forbidden-source"),
        ("acme-dns", "/update", fenced_key, {"subdomain": fenced["subdomain"], "txt": VALUE},
         "forbidden"),
    )  # fmt: skip
    for face, path, credentials, body, code in attempts:
        before = await matrix.state()
        status, answer, _ = await running.call(
            "POST", path, headers={**spoof, **credentials}, json=body
        )
        got = answer.get("error") if face == "acme-dns" else code_of(status, answer)
        await matrix.refused(face, Row("net", path, code), before, got)
    keys = {}
    for name, cidrs in (("net-dns", ["10.0.0.0/8"]), ("here-dns", ["127.0.0.1/32"])):
        issued = issue_token(name, ["example.com"], cidrs=cidrs, tsig="hmac-sha256")
        await running.broker.store.create_token(issued.record)
        assert issued.tsig is not None
        keys[name] = issued.tsig
    before = await matrix.state()
    got = await _signed_write(running, keys["net-dns"], AT_APEX)
    await matrix.refused("RFC 2136", Row("net-dns", AT_APEX, "REFUSED"), before, got)
    matrix.check()
    # the same requests from inside the networks the credentials name do pass
    status, _ = await api.call("POST", "/v1/present", here, json=present)
    assert status == 201
    assert await _signed_write(running, keys["here-dns"], AT_APEX) == OK
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    status, _, _ = await running.call(
        "POST", "/update", headers=headers, json={"subdomain": account["subdomain"], "txt": VALUE}
    )
    assert status == 200


async def test_closed_registration_takes_only_the_admin_token(start_broker: Any, tmp_path: Path):
    settings = write_settings(tmp_path, zones_toml('[acmedns]\nregistration = "closed"\n'))
    running = await start_broker(settings)
    scoped = await running.token("wild", ["*.example.com"])
    attempts = (
        (None, 403, "registration_not_allowed"),
        (scoped, 403, "registration_not_allowed"),
        (near(scoped), 401, "forbidden"),
        (near(running.admin_token), 401, "forbidden"),
    )
    wrong = []
    for token, status, error in attempts:
        got, body, _ = await running.call("POST", "/register", token)
        if (got, body) != (status, {"error": error}):
            wrong.append(f"{token and token[:12]}: {got} {body}")
    assert not wrong
    assert await running.broker.store.list_registrations() == []
    got, _, _ = await running.call("POST", "/register", running.admin_token)
    assert got == 201
