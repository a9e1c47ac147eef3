"""``dns01-broker persist add|list|remove`` and ``token create --persist``: the real
process against a running broker's API, as ``issue`` talks to it."""

from __future__ import annotations

from tests.broker.test_cli import write_config
from tests.process import cli, start

ACCOUNT = "https://acme.example.net/acme/acct/42"
NAME = "_validation-persist.www.example.test"


async def test_persist_add_list_remove_through_a_running_broker(tmp_path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    code, out, err = await cli(
        "--config", str(config), "token", "create", "--name", "granter",
        "--allow", "www.example.test", "--persist",
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    target = ("--config", str(config), "--server", broker.http, "--token", token)

    code, out, err = await cli(
        "persist", "add", "www.example.test", *target, "--issuer", "ca.example.net",
        "--account-uri", ACCOUNT, "--wildcard", "--timeout", "10",
    )  # fmt: skip
    assert code == 0, err
    grant_id = out.strip()
    value = f"ca.example.net; accounturi={ACCOUNT}; policy=wildcard"
    assert f'granted: {NAME}. TXT "{value}"' in err
    assert "served by every authoritative nameserver: " in err
    assert await broker.txt(NAME) == [value]

    code, out, err = await cli("persist", "list", *target)
    assert code == 0, err
    assert grant_id in out
    assert "granter" in out

    code, _, err = await cli(
        "persist", "add", "other.example.test", *target, "--issuer", "ca.example.net",
        "--account-uri", ACCOUNT, "--no-wait",
    )  # fmt: skip
    assert code == 1
    assert "may not write" in err

    code, _, err = await cli("persist", "remove", grant_id, *target)
    assert code == 0, err
    assert f"grant {grant_id} removed" in err
    assert await broker.txt(NAME) == []
    assert await broker.stop() == 0


async def test_a_token_without_the_persist_right_is_told_how_to_get_it(tmp_path, serve):
    config = write_config(tmp_path)
    broker = await start(config, serve)
    code, out, err = await cli(
        "--config", str(config), "token", "create", "--name", "web1", "--allow", "example.test"
    )
    assert code == 0, err
    code, _, err = await cli(
        "persist", "add", "example.test", "--config", str(config), "--server", broker.http,
        "--token", out.strip(), "--issuer", "ca.example.net", "--account-uri", ACCOUNT,
    )  # fmt: skip
    assert code == 1
    assert "token create --persist" in err
    assert await broker.stop() == 0
