"""The acme-dns face, as each client listed in DESIGN calls it, against a real broker."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import uuid

import dns.rdatatype
import pytest

from broker.acmedns import allowed_from
from tests.support import Api, Running, write_settings

VALUES = [f"{i:02d}" + "x" * 41 for i in range(20)]
ACME_SH_FIELD = r"^{{.*\"{field}\":[ ]*\"\([^\"]*\)\".*}}"


def sed_field(body: str, field: str) -> str:
    """What acme.sh's `sed -n 's/^{.*"username":[ ]*"\\([^"]*\\)".*}/\\1/p'` extracts."""
    pattern = ACME_SH_FIELD.format(field=field).replace("\\(", "(").replace("\\)", ")")
    match = re.match(pattern.replace('\\"', '"'), body)
    assert match, f"acme.sh could not find {field} in {body!r}"
    return match.group(1)


async def raw(running: Running, path: str, *, data=None, headers=None):
    assert running.session is not None
    async with running.session.post(running.url + path, data=data, headers=headers) as response:
        return response.status, await response.text(), response


async def update(running: Running, account: dict, txt: str, *, body=None, headers=None):
    payload = (
        body if body is not None else json.dumps({"subdomain": account["subdomain"], "txt": txt})
    )
    all_headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    all_headers.update(headers or {})
    return await raw(running, "/update", data=payload, headers=all_headers)


@pytest.mark.parametrize(
    "body", [None, b"", b"null", b"{}", b'{"allowfrom": []}', b'{"AllowFrom": null}']
)
async def test_register_accepts_every_empty_body_shape(running: Running, body):
    status, text, response = await raw(running, "/register", data=body)
    assert status == 201
    assert response.content_type == "application/json"
    assert "\n" not in text
    account = json.loads(text)
    assert list(account) == ["username", "password", "fulldomain", "subdomain", "allowfrom"]
    uuid.UUID(account["username"], version=4)
    uuid.UUID(account["subdomain"], version=4)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}", account["password"])
    assert account["fulldomain"] == f"{account['subdomain']}.auth.example.test"
    assert account["allowfrom"] == []


async def test_acme_sh_flow_parses_with_sed_and_greps_the_value(running: Running):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}  # curl --data default
    status, text, _ = await raw(running, "/register", data=b"", headers=headers)
    assert status == 201
    username, password = sed_field(text, "username"), sed_field(text, "password")
    subdomain, fulldomain = sed_field(text, "subdomain"), sed_field(text, "fulldomain")
    value = VALUES[0]
    body = f'{{"subdomain":"{subdomain}", "txt": "{value}"}}'
    status, text, _ = await raw(
        running,
        "/update",
        data=body,
        headers={"X-Api-User": username, "X-Api-Key": password, **headers},
    )
    assert status == 200
    assert f'"{value}"' in text
    assert await running.txt(fulldomain) == ("NOERROR", [value])


async def test_goacmedns_shapes_used_by_lego_cert_manager_and_caddy(running: Running):
    status, text, _ = await raw(
        running,
        "/register",
        data=json.dumps({"AllowFrom": ["127.0.0.0/8", "[::1]/128"]}),
        headers={"Content-Type": "application/json", "User-Agent": "goacmedns (linux; amd64)"},
    )
    assert status == 201
    account = json.loads(text)
    assert account["allowfrom"] == ["127.0.0.0/8", "::1/128"]
    body = json.dumps({"SubDomain": account["subdomain"], "Txt": VALUES[1]})
    status, text, _ = await update(running, account, VALUES[1], body=body)
    assert (status, text) == (200, f'{{"txt": "{VALUES[1]}"}}')


async def test_certbot_hook_and_posh_acme_shapes(running: Running):
    _, text, _ = await raw(running, "/register", headers={"Content-Type": "application/json"})
    account = json.loads(text)
    body = json.dumps({"subdomain": account["subdomain"], "txt": VALUES[2]}, indent=2)
    status, text, _ = await update(
        running, account, VALUES[2], body=body, headers={"Content-Type": "application/json"}
    )
    assert (status, json.loads(text)) == (200, {"txt": VALUES[2]})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[]", "malformed_json_payload"),
        (b"{", "malformed_json_payload"),
        (b" ", "malformed_json_payload"),
        (b'"x"', "malformed_json_payload"),
        (b'{"allowfrom": "10.0.0.0/8"}', "malformed_json_payload"),
        (b'{"allowfrom": [1]}', "malformed_json_payload"),
        (b'{"username": "not-a-uuid"}', "malformed_json_payload"),
        (b'{"allowfrom": ["10.0.0.1"]}', "invalid_allowfrom_cidr"),
        (b'{"allowfrom": ["10.0.0.0/33"]}', "invalid_allowfrom_cidr"),
        (b'{"allowfrom": ["nonsense/8"]}', "invalid_allowfrom_cidr"),
    ],
)
async def test_bad_register_bodies_get_acme_dns_errors(running: Running, body, error):
    status, text, _ = await raw(running, "/register", data=body)
    assert (status, text) == (400, f'{{"error": "{error}"}}')
    _, listing, _ = await running.call("GET", "/v1/registrations", running.admin_token)
    assert listing["registrations"] == []


@pytest.mark.parametrize(
    "change",
    [
        {"X-Api-User": "nope"},
        {"X-Api-User": str(uuid.uuid4())},
        {"X-Api-Key": "A" * 40},
        {"X-Api-Key": "short"},
        {"X-Api-Key": "A" * 39 + "!"},
        {"body": b"{not json"},
        {"body": b'{"subdomain": "other", "txt": "' + b"x" * 43 + b'"}'},
        {"body": b'{"subdomain": 5, "txt": "x"}'},
    ],
)
async def test_every_authentication_failure_is_401_forbidden(running: Running, change):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    headers = {k: v for k, v in change.items() if k != "body"}
    status, text, _ = await update(
        running, account, VALUES[0], body=change.get("body"), headers=headers
    )
    assert (status, text) == (401, '{"error": "forbidden"}')
    assert await running.txt(account["fulldomain"]) == ("NOERROR", [])


async def test_username_is_accepted_in_every_uuid_spelling(running: Running):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    upper = {**account, "username": account["username"].upper()}
    assert (await update(running, upper, VALUES[0]))[0] == 200
    braces = {**account, "username": "{" + account["username"] + "}"}
    assert (await update(running, braces, VALUES[1]))[0] == 200


@pytest.mark.parametrize(
    ("txt", "error"), [("short", "bad_txt"), ("x" * 44, "bad_txt"), ("a b" + "x" * 40, "bad_txt")]
)
async def test_bad_txt_values_are_400(running: Running, txt, error):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    status, text, _ = await update(running, account, txt)
    assert (status, text) == (400, f'{{"error": "{error}"}}')


async def test_registered_name_answers_nodata_not_nxdomain(running: Running):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    answer = await running.query(account["fulldomain"], "TXT")
    assert dns.rcode.to_text(answer.rcode()) == "NOERROR"
    assert answer.answer == []
    assert answer.authority[0].rdtype == dns.rdatatype.SOA


async def test_every_live_value_is_kept_up_to_the_cap_then_the_oldest_gives_way(running: Running):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    for value in VALUES[:17]:
        status, _, _ = await update(running, account, value)
        assert status == 200
    assert await running.txt(account["fulldomain"], tcp=True) == ("NOERROR", sorted(VALUES[1:17]))


async def test_values_expire_with_their_lease(start_broker, tmp_path):
    running = await start_broker(
        write_settings(tmp_path, "[challenges]\ndefault_lease = 1\nreconcile_interval = 0.1\n")
    )
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    await update(running, account, VALUES[0])
    assert await running.txt(account["fulldomain"]) == ("NOERROR", [VALUES[0]])
    for _ in range(40):
        if await running.txt(account["fulldomain"]) == ("NOERROR", []):
            break
        await asyncio.sleep(0.1)
    assert await running.txt(account["fulldomain"]) == ("NOERROR", [])


async def test_allowfrom_limits_updates_to_its_networks(running: Running):
    _, text, _ = await raw(running, "/register", data=b'{"allowfrom": ["10.0.0.0/8"]}')
    far = json.loads(text)
    _, text, _ = await raw(running, "/register", data=b'{"allowfrom": ["::ffff:127.0.0.0/104"]}')
    mapped = json.loads(text)
    assert (await update(running, far, VALUES[0]))[0] == 401
    assert (await update(running, mapped, VALUES[0]))[0] == 200
    spoofed = {"X-Forwarded-For": "10.1.2.3"}
    assert (await update(running, far, VALUES[0], headers=spoofed))[0] == 401


@pytest.mark.parametrize(
    ("allowfrom", "source", "allowed"),
    [
        ((), "203.0.113.9", True),
        (("192.0.2.0/24",), "192.0.2.7", True),
        (("192.0.2.0/24",), "::ffff:192.0.2.7", True),
        (("::ffff:192.0.2.0/120",), "192.0.2.7", True),
        (("192.0.2.0/24",), "198.51.100.1", False),
        (("2001:db8::/32",), "2001:db8::1", True),
        (("2001:db8::/32",), "192.0.2.7", False),
        (("192.0.2.0/24",), None, False),
    ],
)
def test_allowfrom_matching_unwraps_ipv4_mapped_addresses(allowfrom, source, allowed):
    address = None if source is None else ipaddress.ip_address(source)
    assert allowed_from(allowfrom, address) is allowed


async def test_forwarded_for_counts_from_a_trusted_proxy(start_broker, tmp_path):
    running = await start_broker(
        write_settings(tmp_path, DNS01_BROKER_HTTP__TRUSTED_PROXIES="127.0.0.1/32")
    )
    _, text, _ = await raw(running, "/register", data=b'{"allowfrom": ["10.0.0.0/8"]}')
    account = json.loads(text)
    assert (await update(running, account, VALUES[0]))[0] == 401
    assert (await update(running, account, VALUES[0], headers={"X-Forwarded-For": "10.1.2.3"}))[
        0
    ] == 200


async def test_cidr_registration_refuses_other_sources(start_broker, tmp_path):
    running = await start_broker(
        write_settings(
            tmp_path, '[acmedns]\nregistration = "cidr"\nregister_from = ["10.0.0.0/8"]\n'
        )
    )
    status, text, _ = await raw(running, "/register")
    assert (status, text) == (403, '{"error": "registration_not_allowed"}')


async def test_closed_registration_needs_an_admin_token(start_broker, tmp_path):
    running = await start_broker(write_settings(tmp_path, '[acmedns]\nregistration = "closed"\n'))
    assert (await raw(running, "/register"))[0] == 403
    scoped = await running.token("web", ["example.test"])
    assert (await raw(running, "/register", headers={"Authorization": f"Bearer {scoped}"}))[
        0
    ] == 403
    admin = {"Authorization": f"Bearer {running.admin_token}"}
    assert (await raw(running, "/register", headers=admin))[0] == 201


async def test_admin_lists_and_deletes_registrations(api: Api, running: Running):
    _, text, _ = await raw(running, "/register")
    account = json.loads(text)
    await update(running, account, VALUES[0])
    status, listing = await api.call("GET", "/v1/registrations", running.admin_token)
    assert status == 200
    assert [r["username"] for r in listing["registrations"]] == [account["username"]]
    assert "password" not in json.dumps(listing)
    status, deleted = await api.call(
        "DELETE",
        f"/v1/registrations/{account['username']}",
        running.admin_token,
        template="/v1/registrations/{username}",
    )
    assert (status, deleted["fulldomain"]) == (200, account["fulldomain"])
    assert await running.txt(account["fulldomain"]) == ("NXDOMAIN", [])
    assert (await update(running, account, VALUES[1]))[0] == 401
    status, _ = await api.call(
        "DELETE",
        f"/v1/registrations/{account['username']}",
        running.admin_token,
        template="/v1/registrations/{username}",
    )
    assert status == 404
    scoped = await running.token("web", ["example.test"])
    assert (await api.call("GET", "/v1/registrations", scoped))[0] == 403


async def test_registrations_survive_a_restart(start_broker, tmp_path):
    settings = write_settings(tmp_path)
    first = await start_broker(settings)
    _, text, _ = await raw(first, "/register")
    account = json.loads(text)
    await first.broker.stop()
    second = await start_broker(settings)
    assert await second.txt(account["fulldomain"]) == ("NOERROR", [])
    assert (await update(second, account, VALUES[0]))[0] == 200


async def test_health_reports_the_store(running: Running):
    status, text, _ = await raw_get(running, "/health")
    assert (status, text) == (200, "")
    await running.broker.store.close()
    status, text, _ = await raw_get(running, "/health")
    assert (status, text) == (503, '{"error": "db_error"}')


async def raw_get(running: Running, path: str):
    async with running.session.get(running.url + path) as response:
        return response.status, await response.text(), response
