"""The HTTP faces' audit events (one middleware for every face), and GET /v1/audit.

The middleware knows which routes change something (``_action``) and records each of
their requests once it is answered, whatever the outcome, plus every request refused
with 401 or 403 on any other route (action ``access``). The actor is the principal
``authenticate`` recorded on the request (or one a handler names with ``note``, such as
an acme-dns account), the source the client's address behind trusted proxies, the
target what a handler names with ``note`` (else the route's path parameter), and the
result ``ok`` or the error's stable code.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from broker import audit
from broker.api.bodies import timestamp
from broker.api.context import CONTEXT, PRINCIPAL, authenticate, context, source_address
from broker.api.middleware import Handler
from broker.errors import BrokerError, FieldProblem, InvalidRequestError
from broker.store import AuditEventRecord, AuditQuery

AUDIT_TARGET = web.RequestKey("audit_target", str)
AUDIT_ACTOR = web.RequestKey("audit_actor", str)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_CURSOR = re.compile(r"(\d{1,12}(?:\.\d{1,20})?):(\d{1,19})")
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d):60")
_QUERY = ("since", "until", "actor", "action", "limit", "cursor")

_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/v1/present"): ("api", audit.PRESENT),
    ("POST", "/v1/cleanup"): ("api", audit.CLEANUP),
    ("POST", "/v1/persist"): ("api", audit.PERSIST_GRANT),
    ("DELETE", "/v1/persist/{id}"): ("api", audit.PERSIST_REVOKE),
    ("POST", "/v1/tokens"): ("api", audit.TOKEN_CREATE),
    ("POST", "/v1/tokens/exchange"): ("api", audit.TOKEN_EXCHANGE),
    ("DELETE", "/v1/tokens/{name}"): ("api", audit.TOKEN_REVOKE),
    ("POST", "/v1/tokens/{name}/rotate"): ("api", audit.TOKEN_ROTATE),
    ("DELETE", "/v1/registrations/{username}"): ("api", audit.REGISTRATION_DELETE),
    ("POST", "/v1/certificates"): ("api", audit.CERTIFICATE_ORDER),
    ("POST", "/register"): ("acme-dns", audit.REGISTRATION_CREATE),
    ("POST", "/update"): ("acme-dns", audit.PRESENT),
}


def note(request: web.Request, *, target: str | None = None, actor: str | None = None) -> None:
    """Name the audited event's target (an fqdn, a token name, an order id) or its actor
    (when the face authenticates other than by token)."""
    if target is not None:
        request[AUDIT_TARGET] = target
    if actor is not None:
        request[AUDIT_ACTOR] = actor


@web.middleware
async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.app[CONTEXT].audit is None:
        return await handler(request)
    started = time.time()
    try:
        response = await handler(request)
    except BrokerError as exc:
        _record(request, started, exc.status, exc.code)
        raise
    except web.HTTPException as exc:
        _record(request, started, exc.status, f"http-{exc.status}")
        raise
    _record(request, started, response.status, _code(response))
    return response


def _record(request: web.Request, started: float, status: int, code: str) -> None:
    """One event, at the time the request came (what it started, such as a certificate
    order, may record its own events before it is answered)."""
    ctx = request.app[CONTEXT]
    assert ctx.audit is not None
    route = request.match_info.route.resource
    template = route.canonical if route is not None else request.path
    face_action = _action(request.method, template, ctx.httpreq_base)
    if face_action is None:
        if status not in (401, 403):
            return
        face_action = ("api", audit.ACCESS)
        target = request.get(AUDIT_TARGET) or f"{request.method} {template}"
    else:
        target = request.get(AUDIT_TARGET) or "/".join(request.match_info.values())
    principal = request.get(PRINCIPAL)
    actor = request.get(AUDIT_ACTOR) or (audit.UNKNOWN if principal is None else principal.name)
    face, action = face_action
    ctx.audit.record(
        face,
        action,
        target or audit.UNKNOWN,
        actor=actor,
        source=source_address(request)(),
        result=audit.OK if 200 <= status < 300 else code,
        at=started,
    )


def _action(method: str, template: str, httpreq_base: str | None) -> tuple[str, str] | None:
    found = _ROUTES.get((method, template))
    if found is None and httpreq_base is not None and method == "POST":
        if template == f"{httpreq_base}/present":
            return "httpreq", audit.PRESENT
        if template == f"{httpreq_base}/cleanup":
            return "httpreq", audit.CLEANUP
    return found


def _code(response: web.StreamResponse) -> str:
    """An error response's stable code (problem+json ``code``, acme-dns ``error``)."""
    if response.status < 400:
        return audit.OK
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and len(body) < 4096:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = data.get("code") or data.get("error")
            if isinstance(code, str):
                return code
    return f"http-{response.status}"


async def list_events(request: web.Request) -> web.Response:
    """GET /v1/audit (admin): events newest first, filtered, a page at a time."""
    (await authenticate(request)).require_admin()
    query = audit_query(request.query)
    events = await context(request).store.audit_events(query)
    last = events[-1] if len(events) == query.limit else None
    return web.json_response(
        {
            "events": [event_json(event) for event in events],
            "next": None if last is None else cursor(last),
        },
        headers={"Cache-Control": "no-store"},
    )


def event_json(event: AuditEventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": timestamp(event.at),
        "actor": event.actor,
        "source": event.source,
        "face": event.face,
        "action": event.action,
        "target": event.target,
        "result": event.result,
    }


def cursor(event: AuditEventRecord) -> str:
    """Where the next page starts: the last event's time and id (repr keeps the float)."""
    return f"{event.at!r}:{event.id}"


def audit_query(params: Any) -> AuditQuery:
    """An AuditQuery from query parameters (a mapping of text); every problem at once."""
    problems: list[FieldProblem] = []
    unknown = sorted(set(params) - set(_QUERY))
    for name in unknown:
        problems.append(
            FieldProblem(f"/{name}", f"unknown query parameter; use {', '.join(_QUERY)}")
        )
    since = _time(params.get("since"), "since", problems)
    until = _time(params.get("until"), "until", problems)
    limit = _limit(params.get("limit"), problems)
    before = _cursor(params.get("cursor"), problems)
    if problems:
        raise InvalidRequestError(
            "; ".join(f"{p.pointer[1:]}: {p.detail}" for p in problems), problems=problems
        )
    return AuditQuery(
        since=since,
        until=until,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        limit=limit,
        before=before,
    )


def _time(text: str | None, name: str, problems: list[FieldProblem]) -> float | None:
    if text is None:
        return None
    # RFC 3339 allows a lower-case t and z and a leap second, which Python does not read.
    text = _LEAP_SECOND.sub(r"\1:59", text.upper())
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            return moment.timestamp()
    except (ValueError, OverflowError):
        pass
    problems.append(
        FieldProblem(f"/{name}", "give an RFC 3339 time with its offset: 2026-12-03T10:00:00Z")
    )
    return None


def _limit(text: str | None, problems: list[FieldProblem]) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        problems.append(
            FieldProblem("/limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
        )
        return DEFAULT_LIMIT
    return int(text)


def _cursor(text: str | None, problems: list[FieldProblem]) -> tuple[float, int] | None:
    if not text:
        return None
    match = _CURSOR.fullmatch(text)
    if match is None or not math.isfinite(float(match.group(1))):
        problems.append(FieldProblem("/cursor", "pass the 'next' value of the previous page as is"))
        return None
    return float(match.group(1)), int(match.group(2))
