"""The real ``dns01-broker`` process: serve, token management on the store, config check."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import pytest

from tests.support import write_config as write_support_config

EXE = str(Path(sys.executable).parent / "dns01-broker")
VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


def write_config(tmp_path: Path) -> Path:
    return write_support_config(tmp_path, state="var")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Served:
    def __init__(self, process: asyncio.subprocess.Process, log: list[str]) -> None:
        self.process = process
        self.log = log
        self.http = ""
        self.dns = ("", 0)

    async def wait_ready(self) -> None:
        assert self.process.stderr is not None
        while not self.http:
            line = (await asyncio.wait_for(self.process.stderr.readline(), 15)).decode()
            assert line, "serve exited early:\n" + "".join(self.log)
            self.log.append(line)
            if match := re.search(r"DNS listening on ([^\s\"]+) port (\d+)", line):
                self.dns = (match.group(1), int(match.group(2)))
            if match := re.search(r"HTTP API listening on (http://[^\s\"]+)", line):
                self.http = match.group(1)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.stderr is not None
        rest = await asyncio.wait_for(self.process.stderr.read(), 15)
        self.log.append(rest.decode())
        return await asyncio.wait_for(self.process.wait(), 15)

    async def txt(self, name: str) -> list[str]:
        answer = await dns.asyncquery.udp(
            dns.message.make_query(name, "TXT"), self.dns[0], port=self.dns[1], timeout=2
        )
        return [b"".join(r.strings).decode() for rrset in answer.answer for r in rrset]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[list[Served]]:
    served: list[Served] = []
    yield served
    for item in served:
        if item.process.returncode is None:
            item.process.kill()
            await item.process.wait()


async def start(config: Path, served: list[Served]) -> Served:
    process = await asyncio.create_subprocess_exec(
        EXE, "--config", str(config), "serve", stderr=asyncio.subprocess.PIPE
    )
    item = Served(process, [])
    served.append(item)
    await item.wait_ready()
    return item


async def present(http: str, token: str, path: str = "/v1/present") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            http + path,
            json={"domain": "*.example.test", "value": VALUE},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status


async def test_serve_bootstraps_an_admin_token_file_and_never_logs_the_token(tmp_path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    token_file = tmp_path / "var" / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert await present(broker.http, token) == 201
    assert await broker.stop() == 0
    log = "".join(broker.log)
    assert str(token_file) in log
    assert token not in log
    assert token.split("_", 2)[2] not in log


async def test_cli_tokens_work_against_a_running_broker_and_revocation_is_immediate(
    tmp_path, serve
):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    code, out, err = await cli(
        "--config", str(config), "token", "create", "--name", "web1",
        "--allow", "example.test", "--allow", "*.example.test",
        "--cidr", "127.0.0.0/8", "--expires", "90d",
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert token.startswith("d01_")
    assert "shown only now" in err

    assert await present(broker.http, token) == 201
    assert await broker.txt("_acme-challenge.example.test") == [VALUE]

    code, out, _ = await cli("token", "list", "--config", str(config))
    assert code == 0
    assert re.search(r"^web1\s+no\s+\S+\s+live\s+example.test,\*.example.test from 127", out, re.M)
    assert token not in out

    code, _, err = await cli("token", "revoke", "web1", env={"DNS01_BROKER_CONFIG": str(config)})
    assert code == 0, err
    assert await present(broker.http, token, "/v1/cleanup") == 401
    code, _, err = await cli("token", "revoke", "web1", "--config", str(config))
    assert code == 1
    assert "no live token" in err
    assert await broker.stop() == 0


async def test_records_survive_a_process_restart(tmp_path, serve):
    config = write_config(tmp_path)
    first = await start(config, serve)
    token = (tmp_path / "var" / "admin.token").read_text().strip()
    assert await present(first.http, token) == 201
    assert await first.stop() == 0
    second = await start(config, serve)
    assert await second.txt("_acme-challenge.example.test") == [VALUE]
    assert "restored 1 live challenge record" in "".join(second.log)
    assert await second.stop() == 0


async def test_config_check_accepts_good_and_reports_every_problem_in_bad(tmp_path):
    config = write_config(tmp_path)
    code, out, _ = await cli("config", "check", "--config", str(config))
    assert code == 0
    assert "provider embedded (embedded): example.test." in out

    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nlisten = "x"\n[dns]\nmax_udp_payload = 1\n')
    code, _, err = await cli("config", "check", "--config", str(bad))
    assert code == 2
    assert "http.listen" in err
    assert "dns.max_udp_payload" in err


async def test_token_create_rejects_bad_input_with_a_message(tmp_path):
    config = write_config(tmp_path)
    code, _, err = await cli(
        "--config", str(config), "token", "create", "--name", "x", "--allow", "a..b"
    )
    assert code == 1
    assert "empty label" in err
    code, _, err = await cli(
        "--config", str(config), "token", "create", "--name", "x", "--allow", "a.b",
        "--expires", "soon",
    )  # fmt: skip
    assert code == 2
    assert "--expires" in err


async def test_json_logs_carry_one_line_per_state_change_and_no_secret(tmp_path, serve):
    config = write_config(tmp_path)
    config.write_text(config.read_text() + '[log]\nformat = "json"\n')
    broker = await start(config, serve)
    token = (tmp_path / "var" / "admin.token").read_text().strip()
    assert await present(broker.http, token) == 201
    assert await present(broker.http, token) == 200  # idempotent: no new state, no new line
    assert await present(broker.http, token, "/v1/cleanup") == 200
    assert await broker.stop() == 0
    entries = [json.loads(line) for line in "".join(broker.log).splitlines() if line.strip()]
    messages = [entry["message"] for entry in entries]
    assert sum(m.startswith("challenge presented") for m in messages) == 1
    assert sum(m.startswith("challenge removed") for m in messages) == 1
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert "owner=admin" in next(m for m in messages if m.startswith("challenge presented"))
    assert token not in "".join(broker.log)


async def test_check_prints_each_server_as_it_goes_and_exits_by_readiness(tmp_path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    config.write_text(
        config.read_text().replace(
            'listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{broker.dns[1]}"]'
        )
    )
    args = ("check", "--config", str(config), "--domain", "*.example.test", "--value", VALUE)
    code, out, _ = await cli(*args, "--once")
    assert code == 1
    assert f"127.0.0.1 port {broker.dns[1]}: answers without it" in out
    token = (tmp_path / "var" / "admin.token").read_text().strip()
    assert await present(broker.http, token) == 201
    code, out, _ = await cli(*args, "--timeout", "10")
    assert code == 0
    assert f"127.0.0.1 port {broker.dns[1]}: serves it" in out
    assert "ready: every nameserver serves the value" in out
    assert await broker.stop() == 0
