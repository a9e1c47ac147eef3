"""A local fake of Google Cloud DNS v1 (the REST calls google-cloud-dns makes) and of
Google's OAuth token endpoint, on loopback. No Cloud DNS emulator exists anywhere.

It behaves like the real API where the broker depends on it: bearer tokens from a
service-account JWT grant (signature checked), changes applied atomically, a deletion
that does not match the RRset exactly answers 412 conditionNotMet (404 when the RRset
is gone), an addition over an existing RRset 409 alreadyExists, names outside the zone
400 invalid, changes ``pending`` for a while then ``done``, errors in Google's JSON
error shape. Tests add faults (``fail``) and races (``before_next_change``).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

API = "/dns/v1/projects/{project}"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_QUOTED_TXT = re.compile(
    r'\s*(?:"(?:[^"\\]|\\.)*"|[^"\s]+)(?:\s+(?:"(?:[^"\\]|\\.)*"|[^"\s]+))*\s*'
)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def response(self) -> web.Response:
        error = {"domain": "global", "reason": self.reason, "message": self.message}
        body = {"error": {"code": self.status, "message": self.message, "errors": [error]}}
        return web.json_response(body, status=self.status)


@dataclass
class Zone:
    name: str
    dns_name: str
    visibility: str = "public"
    id: str = field(default_factory=lambda: str(secrets.randbelow(10**18)))
    rrsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    polls_left: dict[str, int] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        return {
            "kind": "dns#managedZone",
            "name": self.name,
            "dnsName": self.dns_name,
            "id": self.id,
            "visibility": self.visibility,
            "description": "",
            "nameServers": [f"ns-cloud-a{i}.googledomains.com." for i in range(1, 5)],
            "creationTime": "2024-01-01T00:00:00.000Z",
        }

    def contains(self, name: str) -> bool:
        return name == self.dns_name or name.endswith("." + self.dns_name)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    error: ApiError
    times: int


class CloudDnsFake:
    def __init__(self, project: str = "broker-test") -> None:
        self.project = project
        self.zones: dict[str, Zone] = {}
        self.requests: list[tuple[str, str]] = []
        self.pending_polls = 0
        self.page_size = 100
        """A new change answers ``pending`` to this many GETs, then ``done``."""
        self.before_next_change: list[Callable[[Zone], None]] = []
        """Run, one per change request, just before the change is checked: a race."""
        self._faults: list[Fault] = []
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._tokens: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/dns/v1/projects/{project}/{rest:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, path in self.requests if m == method and path.endswith(suffix))

    def add_zone(self, name: str, dns_name: str, visibility: str = "public") -> Zone:
        zone = self.zones[name] = Zone(name, dns_name, visibility)
        ns = zone.resource()["nameServers"]
        soa = f"{ns[0]} cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300"
        zone.rrsets[(dns_name, "SOA")] = _rrset(dns_name, "SOA", 21600, [soa])
        zone.rrsets[(dns_name, "NS")] = _rrset(dns_name, "NS", 21600, ns)
        return zone

    def fail(self, method: str, path: str, status: int, reason: str, message: str, times: int = 1):
        """The next ``times`` requests matching answer this error."""
        self._faults.append(
            Fault(method, re.compile(path), ApiError(status, reason, message), times)
        )

    def service_account(self, email: str = "broker@broker-test.iam.gserviceaccount.com", *,
                        known: bool = True) -> dict[str, Any]:  # fmt: skip
        """A service-account key file's content; ``known=False``: a key this fake never saw."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if known:
            self._keys[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "token_uri": f"{self.url}/token",
        }

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(("POST", "/token"))
        if form.get("grant_type") != JWT_GRANT:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        try:
            claims = self._verified_claims(str(form.get("assertion", "")))
        except (ValueError, InvalidSignature, KeyError):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or claims.get("exp", 0) < time.time():
            return _oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self._tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    def _verified_claims(self, assertion: str) -> dict[str, Any]:
        header, payload, signature = assertion.split(".")
        claims: dict[str, Any] = json.loads(_unb64(payload))
        self._keys[claims["iss"]].verify(
            _unb64(signature),
            f"{header}.{payload}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return claims

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            self._authorize(request)
            for fault in self._faults:
                if (
                    fault.times > 0
                    and fault.method == request.method
                    and fault.path.search(request.path)
                ):
                    fault.times -= 1
                    raise fault.error
            return await self._route(request, request.match_info["rest"].split("/"))
        except ApiError as error:
            return error.response()

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if header.removeprefix("Bearer ") not in self._tokens:
            raise ApiError(
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if request.match_info["project"] != self.project:
            raise ApiError(
                403, "forbidden", f"The caller does not have permission on project "
                f"{request.match_info['project']}",
            )  # fmt: skip

    async def _route(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        method = request.method
        if parts == ["managedZones"] and method == "GET":
            zones = [z.resource() for z in self.zones.values()]
            if "dnsName" in request.query:
                zones = [z for z in zones if z["dnsName"] == request.query["dnsName"]]
            return _page(
                request, self.page_size, "managedZones", "dns#managedZonesListResponse", zones
            )
        if parts == ["managedZones"] and method == "POST":
            body = await request.json()
            if body["name"] in self.zones:
                raise ApiError(
                    409, "alreadyExists", f"The resource '{body['name']}' already exists"
                )
            zone = self.add_zone(body["name"], body["dnsName"], body.get("visibility", "public"))
            return web.json_response(zone.resource())
        zone = self._zone(parts[1]) if len(parts) > 1 and parts[0] == "managedZones" else None
        if zone is None:
            raise ApiError(404, "notFound", f"Unknown path {request.path}")
        rest = parts[2:]
        if rest == [] and method == "GET":
            return web.json_response(zone.resource())
        if rest == [] and method == "DELETE":
            del self.zones[zone.name]
            return web.Response(status=204)
        if rest == ["rrsets"] and method == "GET":
            return self._list_rrsets(request, zone)
        if rest == ["changes"] and method == "POST":
            return web.json_response(self._change(zone, await request.json()))
        if len(rest) == 2 and rest[0] == "changes" and method == "GET":
            return web.json_response(self._get_change(zone, rest[1]))
        raise ApiError(404, "notFound", f"Unknown path {request.path}")

    def _zone(self, name: str) -> Zone:
        if name not in self.zones:
            raise ApiError(
                404,
                "notFound",
                f"The 'parameters.managedZone' resource named '{name}' does not exist.",
            )
        return self.zones[name]

    def _list_rrsets(self, request: web.Request, zone: Zone) -> web.Response:
        name, rtype = request.query.get("name"), request.query.get("type")
        if rtype is not None and name is None:
            raise ApiError(
                400, "required", "The 'parameters.name' parameter is required but was missing."
            )
        rrsets = [
            dict(rrset)
            for (owner, kind), rrset in sorted(zone.rrsets.items())
            if (name is None or owner == name) and (rtype is None or kind == rtype)
        ]
        return _page(
            request, self.page_size, "rrsets", "dns#resourceRecordSetsListResponse", rrsets
        )

    def _change(self, zone: Zone, body: dict[str, Any]) -> dict[str, Any]:
        if self.before_next_change:
            self.before_next_change.pop(0)(zone)
        additions = [
            self._checked(zone, r, f"additions[{i}]")
            for i, r in enumerate(body.get("additions", []))
        ]
        deletions = [
            self._checked(zone, r, f"deletions[{i}]")
            for i, r in enumerate(body.get("deletions", []))
        ]
        if not additions and not deletions:
            raise ApiError(
                400, "required", "The 'entity.change' parameter is required but was missing."
            )
        rrsets = dict(zone.rrsets)
        for i, rrset in enumerate(deletions):
            key = (rrset["name"], rrset["type"])
            if key not in rrsets:
                raise ApiError(
                    404, "notFound", f"The 'entity.change.deletions[{i}]' resource named "
                    f"'{key[0]} ({key[1]})' does not exist.",
                )  # fmt: skip
            if rrsets[key] != rrset:
                raise ApiError(
                    412,
                    "conditionNotMet",
                    f"Precondition not met for 'entity.change.deletions[{i}]'",
                )
            del rrsets[key]
        for i, rrset in enumerate(additions):
            key = (rrset["name"], rrset["type"])
            if key in rrsets:
                raise ApiError(
                    409, "alreadyExists", f"The resource 'entity.change.additions[{i}]' named "
                    f"'{key[0]} ({key[1]})' already exists",
                )  # fmt: skip
            rrsets[key] = rrset
        zone.rrsets = rrsets
        change_id = str(len(zone.changes) + 1)
        change = {
            "kind": "dns#change",
            "id": change_id,
            "startTime": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "status": "pending",
            "additions": additions,
            "deletions": deletions,
        }
        zone.changes.append(change)
        zone.polls_left[change_id] = self.pending_polls
        return change

    def _checked(self, zone: Zone, rrset: dict[str, Any], where: str) -> dict[str, Any]:
        name, rtype = rrset.get("name", ""), rrset.get("type", "")
        if not name.endswith(".") or not zone.contains(name):
            raise ApiError(
                400, "invalid", f"Invalid value for 'entity.change.{where}.name': '{name}'"
            )
        rrdatas = rrset.get("rrdatas") or []
        if not rrdatas:
            raise ApiError(
                400, "required", f"The 'entity.change.{where}.rrdata' parameter is required"
            )
        if rtype == "TXT" and not all(_QUOTED_TXT.fullmatch(text) for text in rrdatas):
            raise ApiError(400, "invalid", f"Invalid value for 'entity.change.{where}.rrdata'")
        try:
            ttl = int(rrset.get("ttl", 0))
        except ValueError:
            raise ApiError(
                400, "invalid", f"Invalid value for 'entity.change.{where}.ttl'"
            ) from None
        return _rrset(name, rtype, ttl, list(rrdatas))

    def _get_change(self, zone: Zone, change_id: str) -> dict[str, Any]:
        change = next((c for c in zone.changes if c["id"] == change_id), None)
        if change is None:
            raise ApiError(
                404,
                "notFound",
                f"The 'parameters.changeId' resource named '{change_id}' does not exist.",
            )
        if zone.polls_left[change_id] > 0:
            zone.polls_left[change_id] -= 1
            return change
        return {**change, "status": "done"}


def _rrset(name: str, rtype: str, ttl: int, rrdatas: list[str]) -> dict[str, Any]:
    return {
        "kind": "dns#resourceRecordSet",
        "name": name,
        "type": rtype,
        "ttl": ttl,
        "rrdatas": rrdatas,
    }


def _page(
    request: web.Request, size: int, key: str, kind: str, items: list[dict[str, Any]]
) -> web.Response:
    size = min(int(request.query.get("maxResults", size)), size)
    start = int(request.query.get("pageToken", "0"))
    body: dict[str, Any] = {"kind": kind, key: items[start : start + size]}
    if start + size < len(items):
        body["nextPageToken"] = str(start + size)
    return web.json_response(body)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
