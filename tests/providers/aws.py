"""Route53 on loopback: a moto server, and a small proxy in front of it that logs every
call and plays what moto cannot (Throttling, refused access keys, PENDING changes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from aiohttp import web

from tests.peers import free_port
from tests.support import require_binary

START_TIMEOUT = 15.0
ROUTE53_PATHS = (
    (r"/2013-04-01/hostedzone/[^/]+/rrset/?",
     {"GET": "ListResourceRecordSets", "POST": "ChangeResourceRecordSets"}),
    (r"/2013-04-01/hostedzone/?", {"GET": "ListHostedZones", "POST": "CreateHostedZone"}),
    (r"/2013-04-01/hostedzone/[^/]+", {"GET": "GetHostedZone"}),
    (r"/2013-04-01/change/[^/]+", {"GET": "GetChange"}),
)  # fmt: skip
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_ACTION = re.compile(rb"(?:^|&)Action=(\w+)")


def moto_server_binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    return (
        str(beside)
        if beside.exists()
        else shutil.which("moto_server") or require_binary("moto_server")
    )


class MotoServer:
    """``moto_server`` on a free loopback port; ``reset()`` empties every backend."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [moto_server_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.url} in {START_TIMEOUT} s")

    async def reset(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + "/moto-api/reset", timeout=aiohttp.ClientTimeout(10)) as reply,
        ):
            assert reply.status == 200

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def route53_client(server: MotoServer) -> Any:
    """boto3's Route53 client on ``server`` (moto takes any credentials)."""
    return boto3.client(
        "route53", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id="tests", aws_secret_access_key="tests",
    )  # fmt: skip


def create_zone(server: MotoServer, name: str) -> None:
    route53_client(server).create_hosted_zone(Name=name, CallerReference=name)


def route53_txt(server: MotoServer, name: str) -> list[str]:
    """The TXT values at ``name`` in the first hosted zone, sorted, unquoted."""
    client = route53_client(server)
    zone = client.list_hosted_zones()["HostedZones"][0]["Id"]
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return sorted(
        record["Value"].strip('"')
        for rrset in sets
        if rrset["Name"] == name and rrset["Type"] == "TXT"
        for record in rrset["ResourceRecords"]
    )


class Route53Proxy:
    """Forwards to moto. ``calls`` lists (operation, access key id) per request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[tuple[str, str]] = []
        self.throttled = 0
        """The next this many ChangeResourceRecordSets answer ``throttle_code``."""
        self.throttle_code = "Throttling"
        self.pending_polls = 0
        """The next this many GetChange answer PENDING."""
        self.refused_keys: set[str] = set()
        """Access key ids answered InvalidClientTokenId, as AWS does for unknown keys."""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = _operation(request.method, request.path, body)
        match = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        key = match.group(1) if match else ""
        self.calls.append((operation, key))
        if key in self.refused_keys:
            return _error(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            )
        if operation == "ChangeResourceRecordSets" and self.throttled > 0:
            self.throttled -= 1
            return _error(400, self.throttle_code, "Rate exceeded")
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            status, content_type = upstream.status, upstream.content_type
        if operation == "GetChange" and self.pending_polls > 0:
            self.pending_polls -= 1
            payload = payload.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        return web.Response(status=status, body=payload, content_type=content_type)


def _operation(method: str, path: str, body: bytes) -> str:
    if path == "/":
        action = _ACTION.search(body)
        return action.group(1).decode() if action else "STS"
    for pattern, methods in ROUTE53_PATHS:
        if re.fullmatch(pattern, path):
            return methods.get(method, f"{method} {path}")
    return f"{method} {path}"


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


def route53_config(server: MotoServer, key: str) -> str:
    """Config tables for the embedded zone beside a Route53 provider ``aws`` holding
    ``r53.test`` on ``server`` (moto takes any key; ``key`` shows in its logs)."""
    return f"""
[providers.embedded]
type = "embedded"
[providers.aws]
type = "route53"
zones = ["r53.test"]
endpoint_url = "{server.url}"
access_key_id = "{key}"
secret_access_key = "{key}"
poll_interval = 0.05
"""
