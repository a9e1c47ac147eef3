"""Secrets stay secret: a real ``dns01-broker serve`` logging at DEBUG (text, then JSON),
configured with a secret of every kind (the PostgreSQL password, ``auth.secret_key``,
``acmedns.hash_key``, a Route53 secret access key used against moto, ``acme.eab_hmac``,
``acme.account_key_passphrase``), is driven through every face and the CLI; then every
byte it printed, logged or answered is searched for every secret, and for the tokens,
TSIG secrets and acme-dns passwords it handed out. Each of those may appear only in the
one answer that hands it out (which is checked to hold it, so the search is known to
work); wrong secrets that share all but one character with a real one may appear nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.name
import dns.rcode
import dns.tsig
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.acme.csr import make_csr
from tests.peers import PostgresCluster
from tests.process import EXE, cli
from tests.providers.aws import MotoServer

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


CREDENTIAL_FIELDS = ("SecretAccessKey", "SessionToken", "X-Amz-Security-Token")
"""Where the temporary credentials of the assumed role (``role_arn``) would show: secrets
the test cannot know beforehand, since moto makes them up."""


def near(secret: str) -> str:
    """A wrong secret sharing all but its last character with ``secret``."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


@dataclass
class Capture:
    """Everything seen, by where it was seen; and which secret each place may hold."""

    seen: dict[str, str] = field(default_factory=dict)
    may_hold: dict[str, set[str]] = field(default_factory=dict)

    def add(self, where: str, text: str, *, holds: tuple[str, ...] = ()) -> None:
        where = f"{len(self.seen):02d} {where}"
        self.seen[where] = text
        self.may_hold[where] = set(holds)


class Broker:
    """``serve`` with its stderr (the log) drained all along, so DEBUG never blocks it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.url = ""
        self.dns: tuple[str, int] = ("", 0)
        self._drain = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := (await self.process.stderr.readline()).decode():
            self.log.append(line)

    async def ready(self) -> None:
        for _ in range(300):
            text = "".join(self.log)
            if "HTTP API listening on" in text and "DNS listening on" in text:
                break
            assert self.process.returncode is None, "serve exited:\n" + text
            await asyncio.sleep(0.05)
        text = "".join(self.log)
        http = re.search(r"HTTP API listening on (http://[^\s\"]+)", text)
        dns_at = re.search(r"DNS listening on ([^\s\"]+) port (\d+)", text)
        assert http, text
        assert dns_at, text
        self.url = http.group(1)
        self.dns = (dns_at.group(1), int(dns_at.group(2)))

    async def stop(self) -> str:
        if self.process.returncode is None:
            self.process.terminate()
        await asyncio.wait_for(self.process.wait(), 15)
        await asyncio.wait_for(self._drain, 15)
        return "".join(self.log)


def config_text(tmp_path: Path, known: dict[str, str], store_url: str, moto: MotoServer) -> str:
    secret_file = tmp_path / "store-password"
    secret_file.write_text(known["store password"] + "\n", encoding="utf-8")
    return f"""
[http]
listen = "127.0.0.1:0"
access_log = true
[dns]
listen = ["127.0.0.1:0"]
[store]
url = "{store_url}"
password = "file:{secret_file}"
[auth]
bootstrap_token_file = "{tmp_path}/admin.token"
secret_key = "{known["auth.secret_key"]}"
[acmedns]
hash_key = "{known["acmedns.hash_key"]}"
[acme]
directory = "https://127.0.0.1:1/directory"
eab_kid = "kid-1"
eab_hmac = "{known["acme.eab_hmac"]}"
account_key_passphrase = "{known["acme.account_key_passphrase"]}"
passphrase_file = "{tmp_path}/acme.passphrase"
[providers.embedded]
type = "embedded"
[providers.aws]
type = "route53"
zones = ["r53.test"]
endpoint_url = "{moto.url}"
access_key_id = "AKIDEXAMPLE"
role_arn = "arn:aws:iam::123456789012:role/dns01"
secret_access_key = "{known["route53 secret_access_key"]}"
poll_interval = 0.05
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_is_printed_logged_or_answered(
    tmp_path: Path, postgres_cluster: PostgresCluster, moto: MotoServer, log_format: str
):
    known = {
        "store password": "pgpw-" + secrets.token_urlsafe(18),
        "url password": "urlpw-" + secrets.token_urlsafe(18),
        "auth.secret_key": "sk-" + secrets.token_urlsafe(24),
        "acmedns.hash_key": "hk-" + secrets.token_urlsafe(24),
        "route53 secret_access_key": "aws-" + secrets.token_urlsafe(24),
        "acme.eab_hmac": secrets.token_urlsafe(32),
        "acme.account_key_passphrase": "pp-" + secrets.token_urlsafe(24),
    }
    database = postgres_cluster.new_database()
    # the cluster trusts loopback, so a password in the URL is carried but never asked for
    store_url = database.replace("postgres@", f"postgres:{known['url password']}@", 1)
    good = config_text(tmp_path, known, store_url, moto)
    config = tmp_path / "broker.toml"
    config.write_text(good + f'[log]\nlevel = "DEBUG"\nformat = "{log_format}"\n', encoding="utf-8")
    capture = Capture()
    process = await asyncio.create_subprocess_exec(
        EXE, "--config", str(config), "serve", stderr=asyncio.subprocess.PIPE
    )
    broker = Broker(process)
    try:
        await broker.ready()
        issued = await exercise(broker, config, capture)
    finally:
        log = await broker.stop()
    capture.add("serve log", log)
    await bad_configs(tmp_path, good, capture, known)
    leaks = [
        f"{name} in {where}"
        for name, value in {**known, **issued}.items()
        for where, text in capture.seen.items()
        if value in text and name not in capture.may_hold[where]
    ]
    leaks += [
        f"{marker} in {where}"
        for marker in CREDENTIAL_FIELDS
        for where, text in capture.seen.items()
        if marker in text
    ]
    assert not leaks, "secrets found where they must not be:\n" + "\n".join(leaks)
    missing = [
        f"{name} not in {where}"
        for where, names in capture.may_hold.items()
        for name in names
        if {**known, **issued}[name] not in capture.seen[where]
    ]
    assert not missing, "the answers meant to hand secrets out did not:\n" + "\n".join(missing)


async def exercise(broker: Broker, config: Path, capture: Capture) -> dict[str, str]:
    """Drive every face; return the secrets handed out (and the near misses tried)."""
    issued: dict[str, str] = {}
    admin = (config.parent / "admin.token").read_text(encoding="utf-8").strip()
    issued["admin token"] = admin
    issued["near admin token"] = near(admin)
    base = ["--config", str(config)]

    code, out, err = await cli(*base, "token", "create", "--name", "cli1", "--allow",
                               "example.test", "--allow", "*.r53.test", "--tsig")  # fmt: skip
    assert code == 0, err
    cli_token, tsig_line = out.splitlines()[:2]
    issued["cli1 token"] = cli_token
    issued["cli1 TSIG secret"] = tsig_line.rsplit(":", 1)[1]
    capture.add("token create stdout", out, holds=("cli1 token", "cli1 TSIG secret"))
    capture.add("token create stderr", err)
    for args in (["token", "list"], ["token", "list", "--json"], ["token", "list", "--all"]):
        code, out, err = await cli(*base, *args)
        assert code == 0, err
        capture.add(" ".join(args), out + err)
    code, out, err = await cli(*base, "config", "check")
    capture.add("config check (good)", out + err)

    async with aiohttp.ClientSession() as session:

        async def call(
            where: str, method: str, path: str, *, holds: tuple[str, ...] = (), **kw: Any
        ) -> tuple[int, str]:
            async with session.request(method, broker.url + path, **kw) as response:
                text = await response.text()
                capture.add(f"{method} {path} {where}", f"{response.headers}\n{text}", holds=holds)
                return response.status, text

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        body = {"name": "api1", "allow": ["example.test", "*.example.test", "*.r53.test"]}
        status, text = await call(
            "create", "POST", "/v1/tokens", json={**body, "tsig": True}, headers=bearer(admin),
            holds=("api1 token", "api1 TSIG secret"),
        )  # fmt: skip
        assert status == 201, text
        created = json.loads(text)
        issued["api1 token"] = created["token"]
        issued["api1 TSIG secret"] = created["tsig"]["secret"]
        api1 = created["token"]
        issued["near api1 token"] = near(api1)
        issued["near cli1 token"] = near(cli_token)

        await call("list", "GET", "/v1/tokens?all=true", headers=bearer(admin))
        await call("whoami", "GET", "/v1/whoami", headers=bearer(api1))
        await call("wrong admin", "GET", "/v1/tokens", headers=bearer(near(admin)))
        await call("non-admin", "POST", "/v1/tokens", json=body, headers=bearer(api1))
        await call("no scheme", "GET", "/v1/whoami", headers={"Authorization": near(api1)})
        present = {"domain": "www.example.test", "value": VALUE}
        await call("wrong", "POST", "/v1/present", json=present, headers=bearer(near(api1)))
        await call("ok", "POST", "/v1/present", json=present, headers=bearer(api1))
        aws = {"domain": "www.r53.test", "value": VALUE}
        await call("route53", "POST", "/v1/present", json=aws, headers=bearer(cli_token))
        await call("route53", "POST", "/v1/cleanup", json=aws, headers=bearer(cli_token))
        await call("forbidden", "POST", "/v1/present", json={**present, "domain": "x.test"},
                   headers=bearer(api1))  # fmt: skip
        await call("malformed", "POST", "/v1/present", data=b"{not json", headers=bearer(api1))
        await call("wait", "POST", "/v1/present", json={**present, "wait": True, "timeout": 2},
                   headers=bearer(api1))  # fmt: skip
        csr = make_csr(ec.generate_private_key(ec.SECP256R1()), ["www.example.test"])
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        status, text = await call(
            "order", "POST", "/v1/certificates", json={"csr": pem, "wait": True, "timeout": 5},
            headers=bearer(api1),
        )  # fmt: skip

        status, text = await call("register", "POST", "/register", holds=("acme-dns password",))
        account = json.loads(text)
        issued["acme-dns password"] = account["password"]
        issued["near acme-dns password"] = near(account["password"])
        update = {"subdomain": account["subdomain"], "txt": VALUE}
        for key in (account["password"], near(account["password"])):
            headers = {"X-Api-User": account["username"], "X-Api-Key": key}
            await call("update", "POST", "/update", json=update, headers=headers)
        await call("bearer", "POST", "/update", json=update, headers=bearer(api1))

        lego = {"fqdn": "_acme-challenge.www.example.test.", "value": VALUE}
        for token in (api1, near(api1)):
            encoded = base64.b64encode(f"lego:{token}".encode()).decode()
            for action in ("present", "cleanup"):
                await call("basic", "POST", f"/{action}", json=lego,
                           headers={"Authorization": f"Basic {encoded}"})  # fmt: skip

        await call("", "GET", "/metrics")
        await call("", "GET", "/readyz")
        await call("", "GET", "/healthz")
        await call("", "GET", "/health")

    real = base64.b64decode(issued["cli1 TSIG secret"])
    wrong = real[:-1] + bytes([real[-1] ^ 1])
    issued["wrong cli1 TSIG secret"] = base64.b64encode(wrong).decode()
    for key, expect in ((real, "NOERROR"), (wrong, "NOTAUTH")):
        message = dns.update.UpdateMessage(
            "example.test.",
            keyring=dns.tsig.Key("cli1.", key, "hmac-sha256"),
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )
        message.add("_acme-challenge.example.test.", 60, "TXT", f'"{VALUE}"')
        host, port = broker.dns
        try:
            response = await dns.asyncquery.tcp(message, host, port=port, timeout=5)
            assert dns.rcode.to_text(response.rcode()) == expect
        except dns.tsig.PeerBadSignature:
            assert expect == "NOTAUTH"
    return issued


BROKEN = (
    ("unknown key beside the secrets", "[auth]", "[auth]\nbogus = 1"),
    ("a secret of the wrong type", 'secret_key = "', 'secret_key = ["'),
    ("a port that is no port", "@127.0.0.1:", "@127.0.0.1:notaport-"),
    ("a provider setting", "poll_interval = 0.05", 'poll_interval = "soon"'),
)


async def bad_configs(tmp_path: Path, good: str, capture: Capture, known: dict[str, str]) -> None:
    """``config check`` of a config with one thing broken beside (or in) the secrets."""
    for what, old, new in BROKEN:
        assert old in good, old
        text = good.replace(old, new, 1)
        if what == "a secret of the wrong type":
            text = text.replace(f'{known["auth.secret_key"]}"', f'{known["auth.secret_key"]}"]', 1)
        broken = tmp_path / "broken.toml"
        broken.write_text(text, encoding="utf-8")
        code, out, err = await cli("--config", str(broken), "config", "check")
        assert code == 2, (what, out, err)
        capture.add(f"config check: {what}", out + err)
    unreachable = f"postgresql://postgres:{known['url password']}@127.0.0.1:1/gone"
    (tmp_path / "unreachable.toml").write_text(
        good.replace(good.split('url = "', 1)[1].split('"', 1)[0], unreachable, 1),
        encoding="utf-8",
    )
    for what, args in (
        ("token list, store unreachable", ["--config", str(tmp_path / "unreachable.toml"),
                                           "token", "list"]),
        ("import from an unreachable acme-dns", ["--config", str(tmp_path / "broker.toml"),
                                                 "import", "acme-dns", "--db", unreachable]),
    ):  # fmt: skip
        code, out, err = await cli(*args)
        assert code == 1, (what, out, err)
        capture.add(what, out + err)
