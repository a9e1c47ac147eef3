"""certbot (Debian) against pebble, its DNS-01 challenge answered through the acme-dns
face by an auth hook of the acme-dns-certbot kind, through a CNAME delegation.

Debian's lego is built without its acme-dns provider ("unrecognized DNS provider"), so
this is the real-client proof of the acme-dns path here; goacmedns's request shapes (used
by lego, cert-manager and Caddy) are covered in tests/broker/api/compat.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import dns.name
import dns.rrset
import pytest

from tests.peers import Pebble, run, verify_chain
from tests.support import Running, require_binary

pytestmark = pytest.mark.timeout(240)

HOOK = """#!/bin/sh
# What acme-dns-certbot's hook does: POST the validation to acme-dns's /update.
exec curl -sf -X POST "$ACMEDNS_URL/update" \\
  -H "X-Api-User: $ACMEDNS_USERNAME" -H "X-Api-Key: $ACMEDNS_PASSWORD" \\
  -d "{\\"subdomain\\": \\"$ACMEDNS_SUBDOMAIN\\", \\"txt\\": \\"$CERTBOT_VALIDATION\\"}"
"""


async def test_certbot_issues_through_an_acmedns_registration(
    running: Running, pebble: Pebble, tmp_path: Path
):
    require_binary("curl")
    status, account, _ = await running.call("POST", "/register")
    assert status == 201
    origin = "_acme-challenge.app.example.test."
    zone = running.broker.zone_set.find(dns.name.from_text(origin))
    assert zone is not None
    zone.add_static(dns.rrset.from_text(origin, 60, "IN", "CNAME", account["fulldomain"] + "."))
    hook = tmp_path / "acme-dns-auth.sh"
    hook.write_text(HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "certbot"
    await run(
        require_binary("certbot"),
        "certonly", "--non-interactive", "--agree-tos", "-m", "ops@example.test",
        "--server", pebble.url, "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", str(hook), "-d", "app.example.test",
        "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
        "--logs-dir", str(work / "logs"),
        env={
            "REQUESTS_CA_BUNDLE": str(pebble.ca_file),
            "ACMEDNS_URL": running.url,
            "ACMEDNS_USERNAME": account["username"],
            "ACMEDNS_PASSWORD": account["password"],
            "ACMEDNS_SUBDOMAIN": account["subdomain"],
            "PATH": os.environ.get("PATH", ""),
        },
    )  # fmt: skip
    live = work / "config" / "live" / "app.example.test"
    await verify_chain(pebble, live / "cert.pem", live / "chain.pem", {"app.example.test"})
    # acme-dns has no delete: the value stays until its lease ends, and no longer
    records = await running.broker.store.live_challenges()
    assert [record.fqdn for record in records] == [account["fulldomain"] + "."]
    lease = running.broker.settings.challenges.default_lease
    assert all(record.expires_at <= time.time() + lease for record in records)
