"""Errors become RFC 9457 problem+json; every request is counted by route and status."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.errors import (
    BodyTooLargeError,
    BrokerError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ProviderFailureError,
    UnauthorizedError,
)
from broker.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_TYPE = "urn:dns01-broker:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_response(error: BrokerError, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "retryable": error.is_retryable,
    }
    if error.problems:
        body["errors"] = [{"pointer": p.pointer, "detail": p.detail} for p in error.problems]
    if isinstance(error, ProviderFailureError):
        body["provider"] = error.provider
    body.update(error.extra)
    headers = dict(headers or {})
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="dns01-broker"'
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return web.Response(
        status=error.status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _from_http(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) as problems; a 405
    keeps its ``Allow`` header (RFC 9110)."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    if exc.status == 405:
        allowed = _plain_methods(request)
        if allowed:  # a fixed path beside a template (/v1/tokens/exchange, /v1/tokens/{name})
            exc = web.HTTPMethodNotAllowed(request.method, allowed)
            headers = {"Allow": exc.headers["Allow"]}
    return problem_response(_http_problem(exc, request), headers)


def _plain_methods(request: web.Request) -> list[str]:
    """The methods of the fixed-path resource at the request's path, if there is one: it
    is what the path names, even where a templated path matches it too."""
    for resource in request.app.router.resources():
        if isinstance(resource, web.PlainResource) and resource.canonical == request.path:
            return sorted(route.method for route in resource)
    return []


def _http_problem(exc: web.HTTPException, request: web.Request) -> BrokerError:
    if exc.status == 413:
        return BodyTooLargeError(
            f"the body is larger than {request.app[MAX_BODY_KEY]} bytes; send a smaller one"
        )
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return MethodNotAllowedError(
            f"{request.method} is not allowed on {request.path}; use {allowed}"
        )
    if exc.status == 404:
        return NotFoundError(f"no resource at {request.path}; see openapi.yaml for the routes")
    return InvalidRequestError(f"the request was refused: {exc.status} {exc.reason}")


MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
METRICS_KEY = web.AppKey("metrics", Metrics)
OPERATIONS_KEY = web.AppKey("operations", dict[str, str])
"""Route template -> "present" or "cleanup", for the latency histogram, on every face."""


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await _problems(request, handler)
        status = response.status
        return response
    finally:
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        metrics = request.app[METRICS_KEY]
        metrics.http_requests.labels(template, request.method, str(status)).inc()
        operation = request.app[OPERATIONS_KEY].get(template)
        if operation is not None and 200 <= status < 300:
            metrics.operation_seconds.labels(operation).observe(time.perf_counter() - started)


async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BrokerError as exc:
        return problem_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http(exc, request)
    except asyncio.CancelledError:
        raise
    except ConnectionError:
        log.debug("client went away during %s %s", request.method, request.path)
        return problem_response(InvalidRequestError("the connection closed mid-request"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(BrokerError("an unexpected error occurred; it has been logged"))
