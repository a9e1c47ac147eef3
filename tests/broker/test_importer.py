"""Importing acme-dns accounts: they keep working with their old credentials."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path

import bcrypt
import psycopg
import pytest

from tests.support import Running, write_config, write_settings

EXE = str(Path(sys.executable).parent / "dns01-broker")
VALUE = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
ACMEDNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS acmedns(Name TEXT, Value TEXT);
CREATE TABLE IF NOT EXISTS records(
    Username TEXT UNIQUE NOT NULL PRIMARY KEY,
    Password TEXT UNIQUE NOT NULL,
    Subdomain TEXT UNIQUE NOT NULL,
    AllowFrom TEXT);
CREATE TABLE IF NOT EXISTS txt(
    Subdomain TEXT NOT NULL, Value TEXT NOT NULL DEFAULT '', LastUpdate INT);
"""


def acmedns_account(allowfrom: list[str] | None = None) -> dict[str, object]:
    password = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t-"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return {
        "username": str(uuid.uuid4()),
        "password": password,
        "hash": "$2a$" + hashed[4:],  # what Go's bcrypt writes
        "subdomain": str(uuid.uuid4()),
        "allowfrom": json.dumps(allowfrom or []),
    }


def acmedns_sqlite(path: Path, accounts: list[dict[str, object]], broken: int = 0) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(ACMEDNS_SCHEMA)
        for account in accounts:
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?)",
                (
                    account["username"],
                    str(account["hash"]).encode(),
                    account["subdomain"],
                    account["allowfrom"],
                ),
            )
        for i in range(broken):
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?)",
                (f"nope-{i}", f"plain-{i}", f"s{i}", "[]"),
            )


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def update(running: Running, account: dict[str, object], password: object = None) -> int:
    headers = {
        "X-Api-User": str(account["username"]),
        "X-Api-Key": str(password or account["password"]),
    }
    body = json.dumps({"subdomain": account["subdomain"], "txt": VALUE})
    async with running.session.post(
        running.url + "/update", data=body, headers=headers
    ) as response:
        return response.status


async def test_imported_sqlite_accounts_keep_working_and_are_rehashed(start_broker, tmp_path):
    accounts = [acmedns_account(), acmedns_account(["10.0.0.0/8"])]
    database = tmp_path / "acme-dns.db"
    acmedns_sqlite(database, accounts, broken=1)
    config = write_config(tmp_path)
    code, out, err = await cli("import", "acme-dns", "--config", str(config), "--db", str(database))
    assert code == 0, err
    assert "imported 2 acme-dns account(s); 0 already here, 1 not valid" in out
    assert "skipped nope-0" in err

    running = await start_broker(write_settings(tmp_path))
    open_account, limited = accounts
    assert await running.txt(f"{open_account['subdomain']}.auth.example.test") == ("NOERROR", [])
    assert await update(running, open_account, "B" * 40) == 401
    assert await update(running, open_account) == 200
    assert await update(running, limited) == 401  # its allowfrom came along
    registration = await running.broker.store.registration(str(open_account["username"]))
    assert registration is not None
    assert registration.legacy_bcrypt is None
    assert registration.key_hash is not None
    assert await update(running, open_account) == 200  # now by the keyed hash

    code, out, _ = await cli("import", "acme-dns", "--config", str(config), "--db", str(database))
    assert "imported 0 acme-dns account(s); 2 already here" in out


async def test_import_refuses_what_is_not_an_acmedns_database(tmp_path):
    config = write_config(tmp_path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = await cli("import", "acme-dns", "--config", str(config), "--db", str(other))
    assert code == 1
    assert "not an acme-dns database" in err
    code, _, err = await cli(
        "import", "acme-dns", "--config", str(config), "--db", str(tmp_path / "absent")
    )
    assert code == 1
    assert "is not a file" in err


@pytest.mark.timeout(120)
async def test_imported_postgresql_accounts_keep_working(start_broker, tmp_path, postgres_url):
    account = acmedns_account()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        for statement in ACMEDNS_SCHEMA.split(";"):
            if statement.strip():
                await conn.execute(statement)
        # lib/pq sends Go's []byte hash as bytea text: \x-prefixed hex in a TEXT column
        hex_hash = "\\x" + str(account["hash"]).encode().hex()
        await conn.execute(
            "INSERT INTO records VALUES (%s, %s, %s, %s)",
            (account["username"], hex_hash, account["subdomain"], account["allowfrom"]),
        )
    config = write_config(tmp_path)
    code, out, err = await cli("import", "acme-dns", "--config", str(config), "--db", postgres_url)
    assert code == 0, err
    assert "imported 1 acme-dns account(s)" in out
    running = await start_broker(write_settings(tmp_path))
    assert await update(running, account) == 200
