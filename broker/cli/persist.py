"""``dns01-broker persist add|list|remove``: dns-persist-01 grants (standing permissions to
issue) through a broker's API, as ``issue`` talks to it (--server/--token, else the local
broker and its admin token)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import aiohttp

from broker import lineage
from broker.acme import ssl_context
from broker.acme.solver import servers_summary
from broker.cli.runner import EXIT_FAILED, run_value
from broker.cli.targets import broker_target, target_options
from broker.config import Settings
from broker.errors import InvalidRequestError

REQUEST_SECONDS = 30.0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    target = target_options()
    persist = commands.add_parser(
        "persist",
        help="dns-persist-01 grants: standing permissions for a CA account to issue",
    )
    actions = persist.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        parents=[common, target],
        help="grant an ACME account a standing permission to issue for a name",
    )
    add.add_argument("domain", help="the certificate name, e.g. example.com")
    add.add_argument("--issuer", required=True, help="the CA's issuer domain, e.g. letsencrypt.org")
    add.add_argument("--account-uri", required=True, help="the ACME account URL at that CA")
    add.add_argument("--wildcard", action="store_true", help="allow wildcard certificates too")
    add.add_argument("--until", type=int, help="Unix time after which the grant is removed")
    add.add_argument(
        "--no-wait", action="store_true", help="do not wait until every nameserver serves it"
    )
    add.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    add.add_argument("--ca-bundle", help="CA certificates for the broker's TLS")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(run=_add)
    listing = actions.add_parser("list", parents=[common, target], help="list live grants")
    listing.add_argument("--ca-bundle", help="CA certificates for the broker's TLS")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)
    remove = actions.add_parser("remove", parents=[common, target], help="remove one grant")
    remove.add_argument("id", help="the grant's id (see: persist list)")
    remove.add_argument("--ca-bundle", help="CA certificates for the broker's TLS")
    remove.set_defaults(run=_remove)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {
        "domain": args.domain,
        "issuer": args.issuer,
        "account_uri": args.account_uri,
        "wildcard": args.wildcard,
    }
    if args.until is not None:
        body["persist_until"] = args.until
    if not args.no_wait:
        body["wait"] = True
        body["timeout"] = args.timeout
    status, answer = _call(args, settings, "POST", "/v1/persist", body)
    if status >= 400:
        return _refused(answer, status)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer["id"])
        verb = "granted" if status == 201 else "already granted"
        print(f'{verb}: {answer["fqdn"]} TXT "{answer["value"]}"', file=sys.stderr)
        for old in answer.get("replaced") or []:
            print(f"  replaces grant {old}", file=sys.stderr)
        report = answer.get("propagation")
        if isinstance(report, dict):
            served = servers_summary(report.get("servers"))
            print(f"  served by every authoritative nameserver: {served}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    status, answer = _call(args, settings, "GET", "/v1/persist", None)
    if status >= 400:
        return _refused(answer, status)
    grants = answer.get("grants", [])
    if args.json:
        print(json.dumps(grants, indent=2))
        return 0
    print(f"{'ID':<24} {'OWNER':<16} {'UNTIL':<24} RECORD")
    for grant in grants:
        until = grant["persist_until"] or "removed by hand"
        print(f"{grant['id']:<24} {grant['owner']:<16} {until:<24} {grant['fqdn']} "
              f"\"{grant['value']}\"")  # fmt: skip
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    status, answer = _call(args, settings, "DELETE", f"/v1/persist/{args.id}", None)
    if status >= 400:
        return _refused(answer, status)
    print(f"grant {answer['id']} removed from {answer['fqdn']}", file=sys.stderr)
    return 0


def _refused(answer: dict[str, Any], status: int) -> int:
    print(f"error: {answer.get('detail') or f'HTTP {status}'}", file=sys.stderr)
    return EXIT_FAILED


def _call(
    args: argparse.Namespace,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> tuple[int, dict[str, Any]]:
    target = broker_target(args, settings)
    wait = float(body.get("timeout", 0)) if body else 0.0
    return run_value(_request(target, method, path, body, ca_bundle=args.ca_bundle, wait=wait))


async def _request(
    target: lineage.Broker,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    ca_bundle: str | None,
    wait: float,
) -> tuple[int, dict[str, Any]]:
    url = target.url.rstrip("/") + path
    connector = aiohttp.TCPConnector(ssl=ssl_context(ca_bundle))
    timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS + wait)
    headers = {"Authorization": f"Bearer {target.token}"}
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            return response.status, answer if isinstance(answer, dict) else {}
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise InvalidRequestError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
