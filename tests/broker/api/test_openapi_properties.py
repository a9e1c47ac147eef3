"""openapi.yaml against a running ``dns01-broker serve``, property-based: schemathesis
generates requests from the contract (valid and invalid ones, every operation, the
stateful sequences its links infer) and checks every answer: no 500, no status the
contract does not list, every body as its schema says, valid requests accepted and
invalid ones refused. With a scoped token and with the admin token on SQLite, and with
the admin token on PostgreSQL.

The run is bounded (examples per operation) and seeded, so CI is repeatable;
OPENAPI_FUZZ_SEED and OPENAPI_FUZZ_EXAMPLES explore further by hand.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.process import Served, cli, start
from tests.support import IN_CI, ROOT, write_config

ST = Path(sys.executable).parent / "st"
ST_CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = os.environ.get("OPENAPI_FUZZ_SEED", "20261203")
EXAMPLES = os.environ.get("OPENAPI_FUZZ_EXAMPLES", "40")
# Certificate orders fail fast: nothing listens on the discard port. Rate limits off:
# schemathesis sends ~60 requests a second with one token from one address, by design.
ACME = (
    '[acme]\ndirectory = "https://127.0.0.1:9/directory"\n'
    "[http.rate_limit]\naddress_rate = 0\ntoken_rate = 0\n"
)


async def _register(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session, session.post(url + "/register") as response:
        assert response.status == 201
        account: dict[str, str] = await response.json()
        return account


async def _schemathesis(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(ST), "--no-color", "--config-file", str(ST_CONFIG),
        "run", str(ROOT / "openapi.yaml"), "--seed", SEED, "--max-examples", EXAMPLES,
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 540)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("who", "engine"), [("scoped", "sqlite"), ("admin", "sqlite"), ("admin", "postgresql")]
)
async def test_every_operation_keeps_the_contract_under_generated_requests(
    tmp_path: Path, serve: list[Served], who: str, engine: str, request: pytest.FixtureRequest
):
    if not ST.exists():
        message = "schemathesis is not installed (make test installs it)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    url = request.getfixturevalue("postgres_url") if engine == "postgresql" else None
    config = write_config(tmp_path, ACME, state="var", store_url=url)
    broker = await start(config, serve)
    code, scoped, err = await cli(
        "--config", str(config), "token", "create", "--name", "fuzz",
        "--allow", "example.test", "--allow", "*.example.test",
    )  # fmt: skip
    assert code == 0, err
    account = await _register(broker.http)
    token = scoped.strip() if who == "scoped" else (tmp_path / "var" / "admin.token").read_text()

    status, report = await _schemathesis(
        tmp_path,
        {
            "BROKER_URL": broker.http,
            "BROKER_TOKEN": token.strip(),
            "ACMEDNS_USER": account["username"],
            "ACMEDNS_KEY": account["password"],
            "ACMEDNS_SUBDOMAIN": account["subdomain"],
        },
    )

    assert status == 0, report
    assert " 0 passed" not in report, report
    assert await broker.stop() == 0
    log = "".join(broker.log)
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
