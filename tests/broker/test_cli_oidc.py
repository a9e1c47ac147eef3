"""The real ``dns01-broker serve`` with OIDC workload identity: a GitHub-shaped job with no
stored secret exchanges its ID token and writes its challenge; and an admin's one-shot,
15-minute token made with the CLI does one present and its cleanup, then is spent."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.fakes.oidc import LocalIssuer
from tests.process import cli, start
from tests.support import write_config

VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
RULES = """
[[oidc.issuers.rules]]
claims = { repository = "org/web", ref = "refs/heads/main" }
allow = ["*.web.example.test", "web.example.test"]
"""


async def post(http: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            http + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_ci_job_with_no_stored_secret_gets_its_wildcard_challenge_written(
    tmp_path, serve, local_issuer: LocalIssuer
):
    config = write_config(tmp_path, local_issuer.config("github", RULES), state="var")
    broker = await start(config, serve)
    id_token = local_issuer.sign(local_issuer.github())
    status, issued = await post(broker.http, "/v1/tokens/exchange", id_token)
    assert status == 201, issued
    challenge = {"domain": "*.web.example.test", "value": VALUE}
    status, _ = await post(broker.http, "/v1/present", issued["token"], challenge)
    assert status == 201
    assert await broker.txt("_acme-challenge.web.example.test") == [VALUE]
    status, _ = await post(broker.http, "/v1/cleanup", issued["token"], challenge)
    assert status == 200
    assert (await post(broker.http, "/v1/tokens/exchange", id_token))[0] == 401  # replayed
    # the ID token as bearer, directly: present and cleanup with the same JWT
    again = {"domain": "web.example.test", "value": VALUE}
    assert (await post(broker.http, "/v1/present", id_token, again))[0] == 201
    assert (await post(broker.http, "/v1/cleanup", id_token, again))[0] == 200
    assert await broker.stop() == 0
    log = "".join(broker.log)
    assert id_token not in log
    assert issued["token"] not in log
    assert "token exchanged" in log


async def test_cli_one_shot_token_does_one_present_and_its_cleanup(tmp_path, serve):
    config = write_config(tmp_path, state="var")
    broker = await start(config, serve)
    code, out, err = await cli(
        "--config", str(config), "token", "create", "--name", "once",
        "--allow", "*.example.test", "--expires", "15m", "--one-shot",
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    code, out, _ = await cli("--config", str(config), "token", "list")
    assert "one-shot" in out
    first = {"domain": "a.example.test", "value": VALUE}
    assert (await post(broker.http, "/v1/present", token, first))[0] == 201
    status, problem = await post(
        broker.http, "/v1/present", token, {**first, "domain": "b.example.test"}
    )
    assert (status, problem["code"]) == (403, "one-shot-used")
    assert (await post(broker.http, "/v1/cleanup", token, first))[0] == 200
    assert (await post(broker.http, "/v1/present", token, first))[0] == 401
    code, _, err = await cli(
        "--config", str(config), "token", "create", "--name", "x", "--allow", "a.example.test",
        "--one-shot", "--admin",
    )  # fmt: skip
    assert code == 1
    assert "one-shot" in err
    assert await broker.stop() == 0


async def test_config_check_fetches_each_issuers_keys(tmp_path, local_issuer: LocalIssuer):
    config = write_config(tmp_path, local_issuer.config("github", RULES), state="var")
    code, out, err = await cli("config", "check", "--config", str(config))
    assert code == 0, err
    assert f"oidc issuer github: {local_issuer.url}, keys by discovery, 1 rule(s) [ok]" in out
    assert local_issuer.jwks_fetches == 1
    await local_issuer.stop()
    code, out, _ = await cli("config", "check", "--config", str(config))
    assert code == 1
    assert "oidc issuer github" in out
    assert "FAILED" in out
