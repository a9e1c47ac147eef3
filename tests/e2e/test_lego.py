"""Real lego against the real pebble CA, through the broker's compat faces.

pebble validates DNS-01 by asking the broker's embedded DNS server, so a certificate is
issued only if the broker really served the values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers import Pebble, run, verify_chain
from tests.support import Running, require_binary

pytestmark = pytest.mark.timeout(240)


async def lego(
    pebble: Pebble, running: Running, path: Path, args: list[str], env: dict[str, str]
) -> str:
    assert running.broker.dns_server is not None
    host, port = running.broker.dns_server.addresses[0]
    return await run(
        require_binary("lego"),
        "--server", pebble.url, "--accept-tos", "--email", "ops@example.test",
        "--path", str(path), "--dns.resolvers", f"{host}:{port}", "--dns.disable-cp",
        *args, "run",
        env={"LEGO_CA_CERTIFICATES": str(pebble.ca_file), **env},
    )  # fmt: skip


async def test_lego_httpreq_issues_a_wildcard_and_apex_certificate(
    running: Running, pebble: Pebble, tmp_path: Path
):
    token = await running.token("lego", ["example.test"])
    path = tmp_path / "lego"
    await lego(
        pebble,
        running,
        path,
        ["--dns", "httpreq", "-d", "*.example.test", "-d", "example.test"],
        {
            "HTTPREQ_ENDPOINT": running.url,
            "HTTPREQ_USERNAME": "lego",
            "HTTPREQ_PASSWORD": token,
        },
    )
    certificates = path / "certificates"
    await verify_chain(
        pebble,
        certificates / "_.example.test.crt",
        certificates / "_.example.test.issuer.crt",
        {"*.example.test", "example.test"},
    )
    assert await running.txt("_acme-challenge.example.test") == ("NXDOMAIN", [])
    assert await running.broker.store.live_challenges() == []
