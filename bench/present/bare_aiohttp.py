"""The references: a bare aiohttp handler that reads a JSON body and answers JSON, on the
same event loop (uvloop when installed) and with access logging off, as the broker runs.
It answers a present 201 with the challenge name, as the broker does, so pairs.lua
cleans up after it too.

    bare_aiohttp.py PORT                 # the bare handler
    bare_aiohttp.py PORT --floor FILE    # + what no broker can skip: the bearer token's
                                         #   hash compared in constant time, and one
                                         #   SQLite WAL write committed per request
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import sys

from aiohttp import web

TOKEN_DIGEST = web.AppKey("token_digest", bytes)
DATABASE = web.AppKey("database", sqlite3.Connection)


async def handler(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    fqdn = f"_acme-challenge.{body.get('domain')}."
    status = 201 if request.path.endswith("/present") else 200
    return web.json_response({"fqdn": fqdn, "value": body.get("value")}, status=status)


async def floor(request: web.Request) -> web.Response:
    secret = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), request.app[TOKEN_DIGEST]):
        return web.json_response({"error": "unauthorized"}, status=401)
    body = json.loads(await request.read())
    fqdn = f"_acme-challenge.{body.get('domain')}."
    database = request.app[DATABASE]
    database.execute("BEGIN IMMEDIATE")
    if request.path.endswith("/present"):
        database.execute("INSERT INTO txt VALUES (?, ?)", (fqdn, body.get("value")))
        status = 201
    else:
        database.execute("DELETE FROM txt WHERE fqdn = ? AND value = ?", (fqdn, body.get("value")))
        status = 200
    database.execute("COMMIT")
    return web.json_response({"fqdn": fqdn, "value": body.get("value")}, status=status)


async def main(port: int, store: str | None, token: str) -> None:
    app = web.Application()
    route = handler
    if store is not None:
        database = sqlite3.connect(store, isolation_level=None)
        database.execute("PRAGMA journal_mode=WAL")
        database.execute("PRAGMA synchronous=NORMAL")
        database.execute("CREATE TABLE IF NOT EXISTS txt (fqdn TEXT, value TEXT)")
        database.execute("CREATE INDEX IF NOT EXISTS txt_fqdn ON txt (fqdn, value)")
        app[DATABASE] = database
        app[TOKEN_DIGEST] = hashlib.sha256(token.encode()).digest()
        route = floor
    app.router.add_post("/v1/present", route)
    app.router.add_post("/v1/cleanup", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    port = int(sys.argv[1])
    store = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--floor" else None
    token = sys.argv[4] if len(sys.argv) > 4 else "floor-token"
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(port, store, token))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(port, store, token))
