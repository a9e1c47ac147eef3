"""Debian's pebble 2.4 predates ACME Renewal Information (RFC 9773): its directory has no
``renewalInfo``, nor certificate profiles. This TLS proxy sits in front of a real pebble,
forwards every request unchanged, adds ``renewalInfo`` (and, when ``profiles`` is set,
``meta.profiles``) to the directory, answers renewalInfo, and records the payload and
nonce of every newOrder. With ``rate_limited_new_orders`` set it answers that many
newOrders itself, as a CA over its limit does: 429, a ``rateLimited`` problem document,
``Retry-After: rate_limit_retry_after`` and a fresh nonce (pebble's). pebble builds its
URLs (and checks each JWS ``url``) from the Host header, so a client pointed at the proxy
only ever talks to the proxy."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from broker.acme.jws import b64url_decode
from tests.peers import Pebble

FORWARDED = ("Content-Type", "Replay-Nonce", "Location", "Retry-After", "Cache-Control")


@dataclass
class AriProxy:
    pebble: Pebble
    offer_renewal_info: bool = True
    window_start: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=30))
    window_end: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=32))
    retry_after: str | None = "21600"
    renewal_status: int = 200
    profiles: dict[str, str] | None = None
    rate_limited_new_orders: int = 0
    rate_limit_retry_after: str | None = "1"
    asked: list[str] = field(default_factory=list)
    new_orders: list[dict[str, Any]] = field(default_factory=list)
    new_order_nonces: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/renewal-info/{id}", self.renewal_info)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        directory = self.pebble.directory
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.session.close()

    async def renewal_info(self, request: web.Request) -> web.Response:
        self.asked.append(request.match_info["id"])
        headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
        if self.renewal_status != 200:
            problem = {"type": "urn:ietf:params:acme:error:serverInternal", "detail": "ARI down"}
            return web.json_response(
                problem,
                status=self.renewal_status,
                content_type="application/problem+json",
                headers=headers,
            )
        body = {
            "suggestedWindow": {
                "start": self.window_start.isoformat().replace("+00:00", "Z"),
                "end": self.window_end.isoformat().replace("+00:00", "Z"),
            },
            "explanationURL": "https://ca.example.test/why",
        }
        return web.json_response(body, headers=headers)

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/order-plz" and request.method == "POST":
            jws = json.loads(body)
            self.new_orders.append(json.loads(b64url_decode(jws["payload"])))
            self.new_order_nonces.append(json.loads(b64url_decode(jws["protected"]))["nonce"])
            if self.rate_limited_new_orders > 0:
                self.rate_limited_new_orders -= 1
                return await self.rate_limited()
        upstream_url = f"https://127.0.0.1:{self.pebble.port}{request.path_qs}"
        headers = {"Host": request.host}
        for name in ("Content-Type", "Accept", "User-Agent"):
            if name in request.headers:
                headers[name] = request.headers[name]
        async with self.session.request(
            request.method,
            upstream_url,
            data=body or None,
            headers=headers,
            ssl=self.pebble.ssl_context(),
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            answer_headers = [(n, v) for n in FORWARDED for v in upstream.headers.getall(n, [])]
            answer_headers += [("Link", v) for v in upstream.headers.getall("Link", [])]
            status = upstream.status
        if request.path == "/dir":
            data = self.amend_directory(data, request.host)
        return web.Response(status=status, body=data, headers=CIMultiDict(answer_headers))

    async def rate_limited(self) -> web.Response:
        async with self.session.head(
            f"https://127.0.0.1:{self.pebble.port}/nonce-plz", ssl=self.pebble.ssl_context()
        ) as upstream:
            headers = {"Replay-Nonce": upstream.headers["Replay-Nonce"]}
        if self.rate_limit_retry_after is not None:
            headers["Retry-After"] = self.rate_limit_retry_after
        problem = {
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders for this account (AriProxy)",
            "status": 429,
        }
        return web.json_response(
            problem, status=429, content_type="application/problem+json", headers=headers
        )

    def amend_directory(self, data: bytes, host: str) -> bytes:
        directory = json.loads(data)
        if self.offer_renewal_info:
            directory["renewalInfo"] = f"https://{host}/renewal-info"
        if self.profiles is not None:
            directory.setdefault("meta", {})["profiles"] = self.profiles
        return json.dumps(directory).encode()
