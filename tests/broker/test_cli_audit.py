"""``dns01-broker token rotate`` and ``dns01-broker audit`` against a running broker's store:
a rotated secret works and the old one is refused at once, rotating the bootstrap admin
token rewrites its file, and the audit log shows what the CLI and the API did."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.broker.test_cli import present, write_config
from tests.process import cli, start


async def test_token_rotate_refuses_the_old_secret_and_audit_shows_it(tmp_path: Path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    code, out, err = await cli(
        "--config", str(config), "token", "create", "--name", "web1", "--allow", "example.test"
    )  # fmt: skip
    assert code == 0, err
    old = out.strip()
    assert await present(broker.http, old) == 201

    code, out, err = await cli("--config", str(config), "token", "rotate", "web1")
    assert code == 0, err
    new = out.strip()
    assert new.startswith("d01_")
    assert new != old
    assert "refused from now on" in err
    assert await present(broker.http, old) == 401
    assert await present(broker.http, new) == 200  # the same value again: extended

    code, _, err = await cli("--config", str(config), "token", "rotate", "ghost")
    assert code == 1
    assert "no live token named 'ghost'" in err

    code, out, err = await cli("--config", str(config), "audit")
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "TIME", "ACTOR", "SOURCE", "FACE", "ACTION", "RESULT", "TARGET",
    ]  # fmt: skip
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[1], r[3], r[4], r[5], r[6]) for r in rows] == [
        (rows[0][1], "cli", "token.rotate", "not-found", "ghost"),
        ("web1", "api", "present", "ok", "_acme-challenge.example.test."),
        ("-", "api", "present", "unauthorized", "-"),
        (rows[0][1], "cli", "token.rotate", "ok", "web1"),
        ("web1", "api", "present", "ok", "_acme-challenge.example.test."),
        (rows[0][1], "cli", "token.create", "ok", "web1"),
        ("broker", "broker", "token.create", "ok", "admin"),
    ]
    assert rows[0][1].startswith("cli")
    for secret in (old, new):
        assert secret not in out

    code, out, _ = await cli(
        "--config", str(config), "audit", "--actor", "web1", "--limit", "1", "--json"
    )  # fmt: skip
    assert code == 0
    page = json.loads(out)
    assert [e["action"] for e in page["events"]] == ["present"]
    code, out, _ = await cli(
        "--config", str(config), "audit", "--actor", "web1", "--limit", "1", "--json",
        "--cursor", page["next"],
    )  # fmt: skip
    assert [e["id"] for e in json.loads(out)["events"]] < [page["events"][0]["id"]]
    assert await broker.stop() == 0


async def test_rotating_the_bootstrap_admin_token_rewrites_its_file(tmp_path: Path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    token_file = tmp_path / "var" / "admin.token"
    old = token_file.read_text().strip()
    code, out, err = await cli("--config", str(config), "token", "rotate", "admin")
    assert code == 0, err
    assert token_file.read_text().strip() == out.strip()
    assert re.search(r"replaces the old one in .*admin\.token", err)
    assert await present(broker.http, old) == 401
    assert await present(broker.http, out.strip()) == 201
    assert await broker.stop() == 0


async def test_audit_refuses_a_bad_filter_with_a_message(tmp_path: Path):
    config = write_config(tmp_path)
    code, _, err = await cli("--config", str(config), "audit", "--since", "yesterday")
    assert code == 2
    assert "RFC 3339" in err
