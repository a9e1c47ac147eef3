"""dns-persist-01 grants over HTTP: ``POST /v1/persist`` writes one (admin, or a token
with the persist right whose scopes cover the name), ``GET /v1/persist`` lists those the
token may see, ``DELETE /v1/persist/{id}`` removes one. Every change is audited."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from broker import audit
from broker.api.audit import note
from broker.api.bodies import (
    RECORD_ID,
    OptionalInt,
    OptionalNumber,
    StrictBody,
    deadline_seconds,
    path_part,
    read_json,
    timestamp,
)
from broker.api.context import authenticate, context, source_address
from broker.api.native import propagation_json
from broker.auth import Principal
from broker.errors import NotFoundError, PropagationTimeoutError
from broker.persist import FOREVER, IssueValueError, PersistGrant, grant_target
from broker.propagation import PropagationReport
from broker.store import ChallengeRecord
from broker.watch import PropagationWatch

log = logging.getLogger(__name__)


class PersistBody(StrictBody):
    domain: str
    issuer: str
    account_uri: str
    wildcard: bool = False
    persist_until: OptionalInt = None
    wait: bool = False
    timeout: OptionalNumber = None


def grant_json(record: ChallengeRecord, report: PropagationReport | None = None) -> dict[str, Any]:
    try:
        parsed: PersistGrant | None = PersistGrant.parse(record.value)
    except IssueValueError:
        parsed = None
    return {
        "id": record.id,
        "domain": record.fqdn.partition(".")[2].removesuffix("."),
        "fqdn": record.fqdn,
        "value": record.value,
        "issuer": None if parsed is None else parsed.issuer,
        "account_uri": None if parsed is None else parsed.account_uri,
        "wildcard": None if parsed is None else parsed.wildcard,
        "persist_until": None if record.expires_at >= FOREVER else timestamp(record.expires_at),
        "zone": record.zone,
        "provider": record.provider,
        "owner": record.owner,
        "state": record.state.value,
        "created_at": timestamp(record.created_at),
        "ended_at": timestamp(record.ended_at),
        "propagation": None if report is None else propagation_json(report),
    }


async def create(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request, PersistBody)
    target = grant_target(body.domain)
    note(request, target=target.fqdn)
    ctx = context(request)
    service = ctx.service
    principal.require_persist(target.base, target.fqdn)
    grant = PersistGrant.build(
        body.issuer, body.account_uri, body.wildcard, body.persist_until, now=service.now()
    )
    deadline = deadline_seconds(body.timeout, "/timeout")
    result = await service.grant(principal, target, grant.value(), grant.expires_at)
    replaced = await _replace_older(request, principal, result.record, grant)
    report = None
    if body.wait:
        report = await _watch(request).wait(result.record, deadline)
        if not report.ready:
            raise PropagationTimeoutError(
                report.error or "the grant is not served by every authoritative nameserver",
                extra={"propagation": propagation_json(report)},
            )
    if result.created:
        log.info(
            "dns-persist-01 grant id=%s fqdn=%s issuer=%s by=%s",
            result.record.id, result.record.fqdn, grant.issuer, principal.name,
        )  # fmt: skip
    answer = grant_json(result.record, report)
    answer["replaced"] = replaced
    return web.json_response(
        answer,
        status=201 if result.created else 200,
        headers={"Location": f"/v1/persist/{result.record.id}"},
    )


async def _replace_older(
    request: web.Request, principal: Principal, record: ChallengeRecord, grant: PersistGrant
) -> list[str]:
    """A grant for the same CA and account at the same name with other terms (wildcard,
    persistUntil) is a change: the older record goes once the new one is written."""
    ctx = context(request)
    replaced = []
    for other in await ctx.store.live_at(record.fqdn):
        if other.id == record.id:
            continue
        try:
            parsed = PersistGrant.parse(other.value)
        except IssueValueError:
            continue
        if (parsed.issuer, parsed.account_uri) != (grant.issuer, grant.account_uri):
            continue
        await ctx.service.revoke_grant(principal, other.id)
        replaced.append(other.id)
        if ctx.audit is not None:
            ctx.audit.record(
                "api",
                audit.PERSIST_CHANGE,
                f"{record.fqdn} {other.id}->{record.id}",
                actor=principal.name,
                source=source_address(request)(),
            )
    return replaced


async def list_grants(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    records = await context(request).service.grants(principal)
    return web.json_response(
        {"grants": [grant_json(record) for record in records]},
        headers={"Cache-Control": "no-store"},
    )


async def remove(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    grant_id = path_part(request, "id", RECORD_ID, "dns-persist-01 grant")
    record = await context(request).service.revoke_grant(principal, grant_id)
    note(request, target=f"{record.fqdn} {record.id}")
    log.info("dns-persist-01 grant removed id=%s fqdn=%s by=%s", record.id, record.fqdn,
             principal.name)  # fmt: skip
    return web.json_response(grant_json(record))


def _watch(request: web.Request) -> PropagationWatch:
    watch = context(request).watch
    if watch is None:
        raise NotFoundError("propagation checks are not running in this broker")
    return watch
