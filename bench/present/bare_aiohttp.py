"""The reference: a bare aiohttp handler that reads a JSON body and answers JSON, on the
same event loop (uvloop when installed) and with access logging off, as the broker runs.
It answers a present 201 with the challenge name, as the broker does, so pairs.lua
cleans up after it too."""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    fqdn = f"_acme-challenge.{body.get('domain')}."
    status = 201 if request.path.endswith("/present") else 200
    return web.json_response({"fqdn": fqdn, "value": body.get("value")}, status=status)


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/present", handler)
    app.router.add_post("/v1/cleanup", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(int(sys.argv[1])))
