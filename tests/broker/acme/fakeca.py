"""A scripted ACME server on loopback, for answers pebble cannot be made to give on
demand (rate limits with Retry-After, a badNonce on a chosen request, a CA that hangs
or answers HTML, a profile its directory lists but refuses). Each reply is what RFC 8555
says a CA sends: problem documents as application/problem+json, a fresh Replay-Nonce on
every response."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker.acme.jws import b64url_decode

PROBLEM = "urn:ietf:params:acme:error:"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def problem(cls, status: int, code: str, detail: str = "", **extra: Any) -> Reply:
        headers = extra.pop("headers", {})
        document = {"type": PROBLEM + code, "detail": detail, "status": status, **extra}
        return cls(status, document, {"Content-Type": "application/problem+json", **headers})


ACCOUNT = Reply(201, {"status": "valid"}, {"Location": "/account/1"})
"""newAccount's answer: account 1, valid."""


@dataclass
class Received:
    path: str
    protected: dict[str, Any]
    payload: Any


class FakeCa:
    def __init__(
        self, *, renewal_info: bool = False, profiles: dict[str, str] | None = None
    ) -> None:
        self.renewal_info = renewal_info
        self.profiles = profiles
        self.script: dict[str, list[Reply]] = defaultdict(list)
        self.received: list[Received] = []
        self._nonces = (f"nonce-{n}" for n in itertools.count())
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dir"

    def on(self, path: str, *replies: Reply) -> None:
        self.script[path].extend(replies)

    def sent_to(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/dir", self.directory)
        app.router.add_route("HEAD", "/nonce", self.nonce)
        app.router.add_route("*", "/{tail:.*}", self.scripted)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def directory(self, request: web.Request) -> web.Response:
        meta: dict[str, Any] = {"termsOfService": f"{self.base}/tos"}
        if self.profiles is not None:
            meta["profiles"] = self.profiles
        body = {
            "newNonce": f"{self.base}/nonce",
            "newAccount": f"{self.base}/account",
            "newOrder": f"{self.base}/order",
            "revokeCert": f"{self.base}/revoke",
            "meta": meta,
        }
        if self.renewal_info:
            body["renewalInfo"] = f"{self.base}/ari/"
        return web.json_response(body)

    async def nonce(self, request: web.Request) -> web.Response:
        return web.Response(headers={"Replay-Nonce": next(self._nonces)})

    async def scripted(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            jws = json.loads(await request.read())
            payload = b64url_decode(jws["payload"]) if jws["payload"] else b""
            self.received.append(
                Received(
                    request.path,
                    json.loads(b64url_decode(jws["protected"])),
                    json.loads(payload) if payload else None,
                )
            )
        replies = self.script[request.path]
        reply = replies.pop(0) if len(replies) > 1 else (replies[0] if replies else Reply(404))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {"Replay-Nonce": next(self._nonces), **reply.headers}
        if isinstance(reply.body, str):
            headers.setdefault("Content-Type", "text/html")
            return web.Response(status=reply.status, text=reply.body, headers=headers)
        body = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers.setdefault("Content-Type", "application/json")
        return web.Response(status=reply.status, body=body, headers=headers)
