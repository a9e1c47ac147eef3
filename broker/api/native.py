"""The native v1 challenge API: present (optionally waiting for propagation), cleanup,
a record's state, and a propagation check of any name in scope."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.api.audit import note
from broker.api.bodies import RECORD_ID, ChallengeBody, path_part, read_json, timestamp
from broker.api.context import authenticate, context
from broker.dnsname import ChallengeTarget, validate_value
from broker.errors import (
    FieldProblem,
    InvalidRequestError,
    NotFoundError,
    PropagationTimeoutError,
)
from broker.propagation import PropagationReport
from broker.store import ChallengeRecord
from broker.watch import PropagationWatch


def challenge_json(
    record: ChallengeRecord, report: PropagationReport | None = None
) -> dict[str, Any]:
    return {
        "id": record.id,
        "fqdn": record.fqdn,
        "value": record.value,
        "zone": record.zone,
        "provider": record.provider,
        "owner": record.owner,
        "state": record.state.value,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "ended_at": timestamp(record.ended_at),
        "delegated_from": record.delegated_from,
        "propagation": None if report is None else propagation_json(report),
    }


def propagation_json(report: PropagationReport) -> dict[str, Any]:
    body = report.to_json()
    body["started_at"] = timestamp(report.started_at)
    for state in (*body["servers"], *body["resolvers"]):
        state["checked_at"] = timestamp(state["checked_at"])
    return body


def _watch(request: web.Request) -> PropagationWatch:
    watch = context(request).watch
    if watch is None:
        raise NotFoundError("propagation checks are not running in this broker")
    return watch


async def present(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, ChallengeBody)
    target, value = body.target(), body.checked_value()
    note(request, target=target.fqdn)
    deadline = body.wait_seconds()
    result = await context(request).service.present(principal, target, value, body.lease)
    report = None
    if body.wait:
        report = await _watch(request).wait(result.record, deadline)
        if not report.ready:
            raise PropagationTimeoutError(
                report.error or "the value is not served by every authoritative nameserver",
                extra={
                    "challenge": challenge_json(result.record),
                    "propagation": propagation_json(report),
                },
            )
    return web.json_response(
        challenge_json(result.record, report),
        status=201 if result.created else 200,
        headers={"Location": f"/v1/challenges/{result.record.id}"},
    )


async def cleanup(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, ChallengeBody)
    target, value = body.target(), body.checked_value()
    note(request, target=target.fqdn)
    record = await context(request).service.cleanup(principal, target, value)
    return web.json_response(
        {
            "fqdn": target.fqdn,
            "value": value,
            "removed": record is not None,
            "challenge": None if record is None else challenge_json(record),
        }
    )


async def get_challenge(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    challenge_id = path_part(request, "id", RECORD_ID, "challenge")
    record = await context(request).service.get(principal, challenge_id)
    watch = context(request).watch
    report = None if watch is None else await watch.latest(record.id)
    return web.json_response(challenge_json(record, report))


async def check_propagation(request: web.Request) -> web.Response:
    """GET /v1/propagation?fqdn=...|domain=...&value=...: one round of checks, now."""
    principal = await authenticate(request)
    query = request.query
    unknown = sorted(set(query) - {"fqdn", "domain", "value"})
    if unknown:
        detail = f"unknown query parameter {unknown[0]!r}: give value and fqdn or domain"
        raise InvalidRequestError(detail, problems=[FieldProblem(f"/{unknown[0]}", detail)])
    if ("fqdn" in query) == ("domain" in query) or "value" not in query:
        raise InvalidRequestError(
            "give value and exactly one of fqdn (_acme-challenge.www.example.com) or domain",
            problems=[FieldProblem("/value", "value and fqdn or domain are required")],
        )
    if "fqdn" in query:
        target = ChallengeTarget.from_fqdn(query["fqdn"])
    else:
        target = ChallengeTarget.from_domain(query["domain"])
    value = validate_value(query["value"])
    principal.require_challenge(target.base, target.fqdn)
    report = await _watch(request).check(target.fqdn, value)
    return web.json_response(propagation_json(report))
