"""The real ``dns01-broker`` process: serve, token management on the store, config check."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from pathlib import Path

import aiohttp
import pytest

from tests.process import cli, start
from tests.support import write_config as write_support_config

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


def write_config(tmp_path: Path) -> Path:
    return write_support_config(tmp_path, state="var")


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
    code, _, err = await cli(
        "--config", str(config), "token", "create", "--name", "x", "--allow", "a.b",
        "--expires", "5000d",
    )  # fmt: skip
    assert code == 2
    assert "--expires: a duration may be at most 3650d" in err
    code, out, _ = await cli("--config", str(config), "token", "list")
    assert (code, out.count("\n")) == (0, 1), out  # the header line only: nothing was stored


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e400", "-1", "0", "601", "soon"])
async def test_check_refuses_a_timeout_that_is_no_bounded_wait(tmp_path, seconds):
    """Once 'nan' made check poll in a tight loop forever, 'inf' wait forever."""
    args = ("--domain", "www.example.test", "--value", VALUE, "--timeout", seconds)
    code, out, err = await cli("--config", str(write_config(tmp_path)), "check", *args)
    assert (code, out) == (2, "")
    assert "argument --timeout" in err


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


async def test_a_request_the_http_parser_refuses_is_one_warning_line_not_a_traceback(
    tmp_path, serve
):
    broker = await start(write_config(tmp_path), serve)
    host, port = broker.http.removeprefix("http://").rsplit(":", 1)
    for raw in (
        b"GET /healthz HTTP/1.1\r\nX-Probe: \x00\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.split()[1] in (b"400", b"414"), status_line
    assert await broker.stop() == 0
    log = "".join(broker.log)
    assert "Traceback" not in log
    assert " ERROR " not in log
    refused = [line for line in log.splitlines() if "refused with 400" in line]
    assert len(refused) == 2, log
    assert all(
        " WARNING aiohttp.server: Error handling request from 127.0.0.1" in line for line in refused
    )
