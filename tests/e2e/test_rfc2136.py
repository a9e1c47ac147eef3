"""Real RFC 2136 clients against the broker's DNS listeners, with a token's TSIG key:
nsupdate (BIND) and knsupdate (Knot) for every answer a client can get, certbot's
dns-rfc2136 plugin and lego's rfc2136 provider issuing from pebble — the last with the
values landing in a Route53 zone (moto) the broker fronts."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from broker.auth import issue_token
from broker.config import load_settings
from broker.store import ChallengeRecord, ChallengeState
from tests.peers import Pebble, run, verify_chain
from tests.providers.aws import MotoServer, route53_config
from tests.support import Running, require_binary, write_config, write_settings

pytestmark = pytest.mark.timeout(240)

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
NAME = "_acme-challenge.www.example.test."


WORKERS = pytest.mark.parametrize(
    "running", [1, 2], indirect=True, ids=["in-process", "2-dns-workers"]
)
"""With 2 DNS workers, an UPDATE reaches a worker, which hands it to the broker."""


@pytest.fixture
async def running(start_broker, tmp_path: Path, request: pytest.FixtureRequest) -> Running:
    workers = str(getattr(request, "param", 1))
    return await start_broker(write_settings(tmp_path, DNS01_BROKER_DNS__WORKERS=workers))


async def tsig_key(running: Running, name: str, scopes: list[str]) -> str:
    """The key as nsupdate -y and knsupdate -y take it: ALGORITHM:NAME:SECRET."""
    issued = issue_token(name, scopes, tsig="hmac-sha256")
    await running.broker.store.create_token(issued.record)
    assert issued.tsig is not None
    return f"{issued.tsig.algorithm}:{issued.tsig.name}:{issued.tsig.secret_b64}"


async def client(tool: str, running: Running, key: str | None, *commands: str) -> tuple[int, str]:
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    script = "\n".join((f"server {host} {port}", "zone example.test.", *commands, "send", ""))
    process = await asyncio.create_subprocess_exec(
        require_binary(tool), *(("-y", key) if key else ()),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(script.encode()), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


@WORKERS
@pytest.mark.parametrize("tool", ["nsupdate", "knsupdate"])
async def test_a_real_client_adds_and_deletes_values_with_a_tokens_key(running: Running, tool: str):
    key = await tsig_key(running, "web1", ["www.example.test"])
    code, out = await client(tool, running, key, f'update add {NAME} 60 TXT "{VALUE}"')
    assert code == 0, out
    assert await running.txt(NAME) == ("NOERROR", [VALUE])
    code, out = await client(tool, running, key, f'update delete {NAME} TXT "{VALUE}"')
    assert code == 0, out
    assert await running.txt(NAME) == ("NXDOMAIN", [])


SOME_SECRET = base64.b64encode(bytes(range(32))).decode()
WRONG_SECRET = f"hmac-sha256:web1.:{SOME_SECRET}"


@pytest.mark.parametrize("tool", ["nsupdate", "knsupdate"])
@pytest.mark.parametrize(
    ("key", "command", "answer"),
    [
        (f"hmac-sha256:nobody.:{SOME_SECRET}", f'update add {NAME} 60 TXT "{VALUE}"', "BADKEY"),
        (WRONG_SECRET, f'update add {NAME} 60 TXT "{VALUE}"', "BADSIG"),
        (None, f'update add {NAME} 60 TXT "{VALUE}"', "REFUSED"),
        ("web1", f'update add _acme-challenge.app.example.test. 60 TXT "{VALUE}"', "REFUSED"),
        ("web1", f"update add {NAME} 60 CNAME www.example.test.", "REFUSED"),
        ("web1", f'update add _acme-challenge.www.other.test. 60 TXT "{VALUE}"', "NOTZONE"),
    ],
)
async def test_a_real_client_is_refused_what_it_may_not_do_and_nothing_changes(
    running: Running, tool: str, key: str | None, command: str, answer: str
):
    good = await tsig_key(running, "web1", ["www.example.test"])
    code, out = await client(tool, running, good if key == "web1" else key, command)
    assert code != 0, out
    assert answer in out, out
    assert await running.broker.store.live_challenges() == []
    assert await running.txt(NAME) == ("NXDOMAIN", [])


@WORKERS
async def test_certbot_dns_rfc2136_issues_a_wildcard_and_apex_certificate(
    running: Running, pebble: Pebble, tmp_path: Path
):
    require_binary("certbot")
    issued = issue_token("certbot", ["example.test"], tsig="hmac-sha256")
    await running.broker.store.create_token(issued.record)
    assert issued.tsig is not None
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    credentials = tmp_path / "rfc2136.ini"
    credentials.write_text(
        f"dns_rfc2136_server = {host}\ndns_rfc2136_port = {port}\n"
        f"dns_rfc2136_name = {issued.tsig.name}\ndns_rfc2136_secret = {issued.tsig.secret_b64}\n"
        "dns_rfc2136_algorithm = HMAC-SHA256\n"
    )
    credentials.chmod(0o600)
    work = tmp_path / "certbot"
    await run(
        require_binary("certbot"),
        "certonly", "--non-interactive", "--agree-tos", "-m", "ops@example.test",
        "--server", pebble.url, "--dns-rfc2136", "--dns-rfc2136-credentials", str(credentials),
        "--dns-rfc2136-propagation-seconds", "1",
        "-d", "*.example.test", "-d", "example.test",
        "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
        "--logs-dir", str(work / "logs"),
        env={"REQUESTS_CA_BUNDLE": str(pebble.ca_file), "PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    live = work / "config" / "live" / "example.test"
    await verify_chain(
        pebble, live / "cert.pem", live / "chain.pem", {"*.example.test", "example.test"}
    )
    assert await running.broker.store.live_challenges() == []  # certbot cleaned up


async def test_lego_rfc2136_issues_through_the_broker_into_route53(
    start_broker, moto: MotoServer, tmp_path: Path
):
    """pebble cannot ask Route53 (moto serves no DNS), so it skips validation here; what
    this shows is lego's updates reaching the Route53 zone through the broker."""
    config = write_config(tmp_path, route53_config(moto, "rfc2136"))
    running = await start_broker(load_settings(config, {}))
    issued = issue_token("lego", ["r53.test"], tsig="hmac-sha256")
    await running.broker.store.create_token(issued.record)
    assert issued.tsig is not None
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    (tmp_path / "pebble").mkdir()
    pebble = Pebble(tmp_path / "pebble", (host, port), always_valid=True)
    await pebble.start()
    try:
        await run(
            require_binary("lego"),
            "--server", pebble.url, "--accept-tos", "--email", "ops@example.test",
            "--path", str(tmp_path / "lego"), "--dns", "rfc2136",
            "--dns.resolvers", f"{host}:{port}", "--dns.disable-cp",
            "-d", "*.r53.test", "-d", "r53.test", "run",
            env={
                "LEGO_CA_CERTIFICATES": str(pebble.ca_file),
                "RFC2136_NAMESERVER": f"{host}:{port}",
                "RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
                "RFC2136_TSIG_KEY": issued.tsig.name,
                "RFC2136_TSIG_SECRET": issued.tsig.secret_b64,
                "RFC2136_SEQUENCE_INTERVAL": "1",  # seconds; lego waits 60 between names
            },
        )  # fmt: skip
    finally:
        await pebble.stop()
    assert (tmp_path / "lego" / "certificates" / "_.r53.test.crt").exists()
    ended = [
        record
        for record in await _all_records(running)
        if record.fqdn == "_acme-challenge.r53.test."
    ]
    assert len(ended) == 2  # wildcard and apex: two values, both presented through Route53
    assert {(r.provider, r.owner, r.state) for r in ended} == {
        ("aws", "lego", ChallengeState.REMOVED)
    }


async def _all_records(running: Running) -> list[ChallengeRecord]:
    store = running.broker.store
    ids = [row[0] for row in await store._select("SELECT id FROM challenges")]
    records = [await store.challenge(i) for i in ids]
    return [record for record in records if record is not None]
