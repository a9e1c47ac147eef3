"""``dns01-broker token``: tokens made, listed and revoked on the configured store
directly (also while brokers run on it)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from broker.api.bodies import timestamp
from broker.api.tokens import token_json
from broker.auth import issue_token
from broker.cli.runner import EXIT_CONFIG, EXIT_FAILED, with_store
from broker.config import Settings
from broker.runtime import secret_box
from broker.store import Store
from broker.tsig import ALGORITHMS, DEFAULT_ALGORITHM
from broker.values import parse_duration


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    token = commands.add_parser("token", help="manage API tokens in the configured store")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    create = token_commands.add_parser("create", parents=[common], help="make a token")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="domain scope: example.com (that name) or *.example.com (every name below)",
    )
    create.add_argument("--cidr", action="append", default=[], help="allowed source network")
    create.add_argument("--expires", help="lifetime such as 90d, 12h (default: never)")
    create.add_argument("--admin", action="store_true", help="may manage tokens, any name")
    create.add_argument(
        "--tsig",
        nargs="?",
        const=DEFAULT_ALGORITHM,
        choices=ALGORITHMS,
        metavar="ALGORITHM",
        help="give it a TSIG key for RFC 2136 updates too (default algorithm hmac-sha256); "
        "printed as ALGORITHM:NAME:SECRET, nsupdate -y's form",
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=_token_create)
    listing = token_commands.add_parser("list", parents=[common], help="list tokens")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_token_list)
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("name")
    revoke.set_defaults(run=_token_revoke)


def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lifetime = None if args.expires is None else parse_duration(args.expires)
    except ValueError as exc:
        print(f"error: --expires: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    box = secret_box(settings)
    issued = issue_token(
        args.name, args.allow, cidrs=args.cidr, admin=args.admin, lifetime=lifetime,
        tsig=args.tsig, box=box,
    )  # fmt: skip

    async def create(store: Store) -> int:
        await store.create_token(issued.record)
        return 0

    code = with_store(settings, create)
    key = issued.tsig
    if args.json:
        shown: dict[str, Any] = {"name": issued.record.name, "token": issued.secret}
        if key is not None:
            shown["tsig"] = {"name": key.name, "algorithm": key.algorithm, "secret": key.secret_b64}
        print(json.dumps(shown))
        return code
    print(issued.secret)
    if key is not None:
        print(f"{key.algorithm}:{key.name}:{key.secret_b64}")
        sealed = (
            "sealed with auth.secret_key" if box.seals else "kept unsealed (no auth.secret_key)"
        )
        print(
            f"TSIG key {key.name} ({key.algorithm}, secret {sealed}) on the second line",
            file=sys.stderr,
        )
    print(f"token {issued.record.name!r} created; it is shown only now", file=sys.stderr)
    return code


def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(store: Store) -> int:
        records = await store.list_tokens(include_revoked=args.all)
        if args.json:
            print(json.dumps([token_json(record) for record in records], indent=2))
            return 0
        print(f"{'NAME':<20} {'ADMIN':<5} {'EXPIRES':<24} {'STATE':<8} SCOPES / CIDRS")
        for record in records:
            state = "revoked" if record.revoked_at else "live"
            scopes = ",".join(record.scopes) or "(all)"
            cidrs = f" from {','.join(record.cidrs)}" if record.cidrs else ""
            expires = timestamp(record.expires_at) or "never"
            admin = "yes" if record.admin else "no"
            print(f"{record.name:<20} {admin:<5} {expires:<24} {state:<8} {scopes}{cidrs}")
        return 0

    return with_store(settings, listing)


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke(store: Store) -> int:
        record = await store.revoke_token(args.name, time.time())
        if record is None:
            print(f"error: no live token named {args.name!r}", file=sys.stderr)
            return EXIT_FAILED
        print(f"token {args.name!r} revoked", file=sys.stderr)
        return 0

    return with_store(settings, revoke)
