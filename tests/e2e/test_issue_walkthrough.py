"""The steps a person goes through with `dns01-broker issue` — names, CA, account and
terms, challenges, result — driven for real under a pseudo-terminal against pebble; the
same steps refused clearly without a terminal; and the lineages kept afterwards
(`renew --all`, `certificates`), the CA list, ACME profiles and the account commands."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pexpect
import pytest
from cryptography import x509

from broker.acme.cas import CATALOG
from tests.broker.acme.ariproxy import AriProxy
from tests.e2e.world import EXE, World
from tests.peers import free_port, verify_chain

pytestmark = pytest.mark.timeout(300)


def _converse(world: World, config_dir: Path, token: str) -> tuple[int | None, str]:
    """Answer issue's questions the way a person would (blocking: run in a thread, the
    broker shares this test's event loop)."""
    child = pexpect.spawn(
        EXE,
        ["issue", "--config", str(world.config), "--config-dir", str(config_dir),
         "--server", world.running.url],
        env={"DNS01_BROKER_TOKEN": token, "PATH": "/usr/bin:/bin", "TERM": "xterm"},
        encoding="utf-8", timeout=90, dimensions=(50, 160),
    )  # fmt: skip
    try:
        child.expect("Names for the certificate")
        child.sendline("example.test, www.other.test")
        child.expect(r"www\.other\.test  \(NOT covered by token 'web1'\)")
        child.expect("give other names")
        child.expect("Names for the certificate")
        child.sendline("example.test *.example.test")
        child.expect(r"\*\.example\.test  \(wildcard: every name one level below example\.test\)")
        child.expect(r"Order a certificate for these names\? \[Y/n\]")
        child.sendline("")
        child.expect(r"Which CA\? \[1-\d+\]")
        listing = child.before
        assert "zerossl" in listing
        assert "(needs EAB)" in listing
        number = re.search(r"(\d+)\) pebble\s", listing)
        assert number is not None, listing
        child.sendline("0")  # out of range: asked again
        child.expect("give a number from 1 to")
        child.sendline(number.group(1))
        child.expect("terms of service: (data:[^\r\n]+)")
        child.expect(r"Do you agree to them\? \[y/N\]")
        child.sendline("y")
        child.expect(r"example\.test\s+pending → presented → propagated")
        child.expect(r"served by \S+ 127\.0\.0\.1 ✓")
        child.expect("certificate for ")
        child.expect(r"valid until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")
        child.expect(r"renewal due \d{4}-\d\d-\d\d")
        child.expect(pexpect.EOF)
        transcript = child.before
    finally:
        child.close()
    return child.exitstatus, transcript


async def test_issue_asks_for_names_ca_and_terms_on_a_terminal(world: World, tmp_path: Path):
    token = await world.running.token("web1", ["example.test"])
    config_dir = tmp_path / "live"
    status, _ = await asyncio.to_thread(_converse, world, config_dir, token)
    assert status == 0
    out = config_dir / "example.test"
    names = {"example.test", "*.example.test"}
    await verify_chain(world.pebble, out / "cert.pem", out / "chain.pem", names)
    params = json.loads((out / "renewal.json").read_text())
    assert (params["ca"], params["directory"]) == ("pebble", world.pebble.url)
    accounts = list((config_dir / "accounts").iterdir())
    assert [a.name for a in accounts] == [Path(params["account"]).name]
    assert accounts[0].stat().st_mode & 0o077 == 0
    assert await world.running.broker.store.live_challenges() == []


async def test_without_a_terminal_every_missing_answer_is_an_error(world: World, tmp_path: Path):
    code, _, stderr = await world.cli("issue", "--out", str(tmp_path / "a"))
    assert code == 2
    assert "give the names with -d" in stderr
    code, _, stderr = await world.cli(
        "issue", "-d", "example.test", "--out", str(tmp_path / "b"), "--directory", world.pebble.url
    )
    assert code == 2
    assert "terms of service" in stderr
    assert "--agree-tos" in stderr
    code, _, stderr = await world.cli("issue", "-d", "example.test", "--ca", "zerossl")
    zerossl = next(ca for ca in CATALOG if ca.name == "zerossl")
    assert code == 1
    assert "needs External Account Binding" in stderr
    assert zerossl.eab_help in stderr
    code, _, stderr = await world.cli("issue", "-d", "example.test", "--ca", "no-such-ca")
    assert code == 1
    assert "no CA named 'no-such-ca'" in stderr
    code, _, stderr = await world.cli("issue", "-d", "bad..name", "--ca", "pebble")
    assert code == 2
    for directory in ("a", "b"):
        assert not (tmp_path / directory).exists()


async def test_renew_all_renews_every_lineage_and_one_failure_stops_no_other(
    world: World, tmp_path: Path
):
    live = tmp_path / "live"
    marker = tmp_path / "deployed"
    for name in ("app.example.test", "*.api.example.test"):
        code, _, stderr = await world.cli(
            "issue", "-d", name, "--config-dir", str(live), "--ca", "pebble", "--agree-tos",
            "--deploy-hook", f'echo "own $RENEWED_DOMAINS" >> {marker}',
        )  # fmt: skip
        assert code == 0, stderr
    app, api = live / "app.example.test", live / "_.api.example.test"
    before = {
        out: x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()) for out in (app, api)
    }
    assert len(list((live / "accounts").iterdir())) == 1  # one account at one CA

    code, stdout, _ = await world.cli("renew", "--all", "--config-dir", str(live))
    assert code == 0
    assert stdout.count("not due: renewal at") == 2

    code, stdout, _ = await world.cli("certificates", "--config-dir", str(live))
    assert code == 0
    for out, certificate in before.items():
        row = next(line for line in stdout.splitlines() if line.startswith(out.name))
        assert f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M}" in row
        assert "pebble" in row

    params = json.loads((api / "renewal.json").read_text())
    params["directory"] = f"https://127.0.0.1:{free_port()}/dir"  # its CA is gone
    (api / "renewal.json").write_text(json.dumps(params))
    code, stdout, _ = await world.cli(
        "renew", "--all", "--config-dir", str(live), "--force",
        "--deploy-hook", f'echo "all $RENEWED_LINEAGE" >> {marker}',
    )  # fmt: skip
    assert code == 1
    table = {line.split()[0]: line for line in stdout.splitlines() if line.startswith(("app", "_"))}
    assert "renewed: valid until" in table["app.example.test"]
    assert "failed" in table["_.api.example.test"]
    assert "2 lineage(s), 1 failed" in stdout
    after = x509.load_pem_x509_certificate((app / "cert.pem").read_bytes())
    assert after.serial_number != before[app].serial_number
    unchanged = x509.load_pem_x509_certificate((api / "cert.pem").read_bytes())
    assert unchanged.serial_number == before[api].serial_number
    assert marker.read_text().splitlines() == ["own app.example.test", f"all {app}"]


async def test_ca_list_and_show(world: World):
    code, stdout, _ = await world.cli("ca", "list")
    assert code == 0
    for ca in CATALOG:
        assert re.search(rf"^{re.escape(ca.name)}\s+{'yes' if ca.eab_required else 'no'}\s+"
                         rf"{re.escape(ca.directory)}$", stdout, re.MULTILINE), ca.name  # fmt: skip
    assert re.search(rf"^pebble\s+no\s+{re.escape(world.pebble.url)}\s+\(config\)$", stdout, re.M)
    code, stdout, _ = await world.cli("ca", "show", "pebble")
    assert code == 0
    assert f"directory:        {world.pebble.url}" in stdout
    assert "profiles:         (none)" in stdout
    assert "renewal info:     no" in stdout
    code, _, stderr = await world.cli("ca", "show", "nope")
    assert code == 2
    assert "no CA named 'nope'" in stderr
    gone = f"https://127.0.0.1:{free_port()}/dir"
    code, _, stderr = await world.cli("ca", "show", "--directory", gone)
    assert (code, stderr.strip()) == (
        1,
        f"error: cannot reach {gone}: " + stderr.split(": ", 2)[2].strip(),
    )
    assert "Traceback" not in stderr


PROFILES = {"classic": "https://ca.example.test/docs#classic", "shortlived": "six days"}


async def test_profiles_are_listed_ordered_and_refused_when_the_ca_lacks_them(
    world: World, tmp_path: Path
):
    proxy = AriProxy(world.pebble, profiles=PROFILES)
    await proxy.start()
    try:
        code, stdout, _ = await world.cli("ca", "show", "--directory", proxy.url)
        assert code == 0
        assert re.search(
            r"^profiles:\s+classic: https://ca.example.test/docs#classic$", stdout, re.M
        )
        assert re.search(r"^\s+shortlived: six days$", stdout, re.M)

        issue = ["issue", "-d", "app.example.test", "--directory", proxy.url, "--agree-tos"]
        code, _, stderr = await world.cli(
            *issue, "--out", str(tmp_path / "x"), "--profile", "tlsserver"
        )
        assert code == 1
        assert "tlsserver" in stderr
        assert "classic, shortlived" in stderr
        assert proxy.new_orders == []

        out = tmp_path / "short"
        code, _, stderr = await world.cli(*issue, "--out", str(out), "--profile", "shortlived")
        assert code == 0, stderr
        assert [order.get("profile") for order in proxy.new_orders] == ["shortlived"]
        code, _, stderr = await world.cli("renew", "--out", str(out), "--force")
        assert code == 0, stderr
        assert [order.get("profile") for order in proxy.new_orders] == ["shortlived"] * 2
    finally:
        await proxy.stop()


async def test_account_rollover_then_deactivation(world: World, tmp_path: Path):
    out = tmp_path / "cert"
    code, _, stderr = await world.cli(*world.issue_args(out, "app.example.test"))
    assert code == 0, stderr
    first = json.loads((out / "account.json").read_text())
    code, stdout, stderr = await world.cli("account", "rollover", "--out", str(out))
    assert code == 0, stderr
    assert "has a new key" in stdout
    rolled = json.loads((out / "account.json").read_text())
    assert rolled["url"] == first["url"]
    assert rolled["key"] != first["key"]
    code, _, stderr = await world.cli("renew", "--out", str(out), "--force")
    assert code == 0, stderr  # the new key is the account's

    code, _, stderr = await world.cli("account", "deactivate", "--out", str(out))
    assert code == 2
    assert "--yes" in stderr
    code, stdout, stderr = await world.cli("account", "deactivate", "--out", str(out), "--yes")
    assert code == 0, stderr
    assert (out / "account.json.deactivated").is_file()
    assert not (out / "account.json").exists()
    code, _, stderr = await world.cli("renew", "--out", str(out), "--force")
    assert code == 0, stderr
    assert json.loads((out / "account.json").read_text())["url"] != first["url"]


async def test_issue_persist_says_pebble_offers_no_dns_persist_01_and_uses_dns_01(
    world: World, tmp_path: Path
):
    live = tmp_path / "live"
    code, stdout, stderr = await world.cli(
        "issue", "-d", "app.example.test", "--config-dir", str(live), "--ca", "pebble",
        "--agree-tos", "--persist",
    )  # fmt: skip
    assert code == 0, stderr
    assert "dns-persist-01 where the CA offers it" in stdout
    assert (
        "persist-unavailable app.example.test: the CA offers no dns-persist-01 here (only "
        in stdout
    )
    assert "answering dns-01 instead" in stdout
    params = json.loads((live / "app.example.test" / "renewal.json").read_text())
    assert params["persist"] is True

    issued = await world.running.broker.store.live_under("_validation-persist")
    assert issued == []
    token = await world.running.token("web1", ["example.test"])
    code, _, stderr = await world.cli(
        "issue", "-d", "example.test", "--out", str(tmp_path / "x"), "--ca", "pebble",
        "--agree-tos", "--persist", "--server", world.running.url, "--token", token,
    )  # fmt: skip
    assert code == 1
    assert "--persist needs a token with the persist right" in stderr
