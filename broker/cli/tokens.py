"""``dns01-broker token``: tokens made, listed, rotated and revoked on the configured
store directly (also while brokers run on it); each change goes to the audit log with the
actor ``cli:<login name>``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from broker import audit
from broker.api.bodies import timestamp
from broker.api.tokens import rotate_token_named, token_json
from broker.auth import IssuedToken, issue_token
from broker.cli.runner import EXIT_CONFIG, EXIT_FAILED, with_store
from broker.config import Settings
from broker.errors import NotFoundError
from broker.runtime import BOOTSTRAP_TOKEN_NAME, secret_box, write_secret_file
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
    create.add_argument("--expires", help="lifetime such as 90d, 12h, 15m (default: never)")
    create.add_argument("--admin", action="store_true", help="may manage tokens, any name")
    create.add_argument(
        "--persist",
        action="store_true",
        help="may create dns-persist-01 grants (standing permissions to issue) in its scopes",
    )
    create.add_argument(
        "--tsig",
        nargs="?",
        const=DEFAULT_ALGORITHM,
        choices=ALGORITHMS,
        metavar="ALGORITHM",
        help="give it a TSIG key for RFC 2136 updates too (default algorithm hmac-sha256); "
        "printed as ALGORITHM:NAME:SECRET, nsupdate -y's form",
    )
    create.add_argument(
        "--one-shot",
        action="store_true",
        help="good for one present and the cleanup of that same name and value, then spent",
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
    rotate = token_commands.add_parser(
        "rotate",
        parents=[common],
        help="give a token a new secret (the old one is refused from then on)",
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--tsig",
        action="store_true",
        help="give its TSIG key a new secret too (default: kept; a token without one gets one)",
    )
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(run=_token_rotate)


async def record(store: Store, action: str, target: str, result: str = audit.OK) -> None:
    """Write one audit event of this command at once (the CLI has no writer task)."""
    await store.add_audit_events([audit.event("cli", action, target, actor=cli_actor(),
                                              result=result)])  # fmt: skip


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lifetime = None if args.expires is None else parse_duration(args.expires)
    except ValueError as exc:
        print(f"error: --expires: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    box = secret_box(settings)
    issued = issue_token(
        args.name, args.allow, cidrs=args.cidr, admin=args.admin, lifetime=lifetime,
        tsig=args.tsig, box=box, one_shot=args.one_shot,
        persist=args.persist,
    )  # fmt: skip

    async def create(store: Store) -> int:
        await store.create_token(issued.record)
        await record(store, audit.TOKEN_CREATE, issued.record.name)
        return 0

    code = with_store(settings, create)
    _show(issued, args.json, sealed=box.seals)
    print(f"token {issued.record.name!r} created; it is shown only now", file=sys.stderr)
    return code


def _show(issued: IssuedToken, as_json: bool, *, sealed: bool) -> None:
    """Print a token's secret (and its new TSIG key's) once."""
    key = issued.tsig
    if as_json:
        shown: dict[str, Any] = {"name": issued.record.name, "token": issued.secret}
        if key is not None:
            shown["tsig"] = {"name": key.name, "algorithm": key.algorithm, "secret": key.secret_b64}
        print(json.dumps(shown))
        return
    print(issued.secret)
    if key is not None:
        print(f"{key.algorithm}:{key.name}:{key.secret_b64}")
        kept = "sealed with auth.secret_key" if sealed else "kept unsealed (no auth.secret_key)"
        print(
            f"TSIG key {key.name} ({key.algorithm}, secret {kept}) on the second line",
            file=sys.stderr,
        )


def _token_rotate(args: argparse.Namespace, settings: Settings) -> int:
    box = secret_box(settings)
    rotated: list[IssuedToken] = []

    async def rotate(store: Store) -> int:
        try:
            issued = await rotate_token_named(store, args.name, tsig=args.tsig, box=box)
        except NotFoundError as exc:
            await record(store, audit.TOKEN_ROTATE, args.name, exc.code)
            print(f"error: {exc.detail}", file=sys.stderr)
            return EXIT_FAILED
        await record(store, audit.TOKEN_ROTATE, args.name)
        rotated.append(issued)
        return 0

    code = with_store(settings, rotate)
    if not rotated:
        return code
    _show(rotated[0], args.json, sealed=box.seals)
    bootstrap = settings.auth.bootstrap_token_file
    if args.name == BOOTSTRAP_TOKEN_NAME and bootstrap.exists():
        write_secret_file(bootstrap, rotated[0].secret)
        print(f"the new secret also replaces the old one in {bootstrap}", file=sys.stderr)
    print(
        f"token {args.name!r} rotated: its old secret is refused from now on; the new one "
        "is shown only now",
        file=sys.stderr,
    )
    return code


def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(store: Store) -> int:
        records = await store.list_tokens(include_revoked=args.all)
        if args.json:
            print(json.dumps([token_json(record) for record in records], indent=2))
            return 0
        print(f"{'NAME':<20} {'ADMIN':<7} {'EXPIRES':<24} {'STATE':<8} SCOPES / CIDRS")
        for record in records:
            state = "revoked" if record.revoked_at else "live"
            scopes = ",".join(record.scopes) or "(all)"
            cidrs = f" from {','.join(record.cidrs)}" if record.cidrs else ""
            expires = timestamp(record.expires_at) or "never"
            admin = "yes" if record.admin else ("persist" if record.persist else "no")
            once = " (one-shot)" if record.one_shot is not None else ""
            print(f"{record.name:<20} {admin:<7} {expires:<24} {state:<8} {scopes}{cidrs}{once}")
        return 0

    return with_store(settings, listing)


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke(store: Store) -> int:
        revoked = await store.revoke_token(args.name, time.time())
        if revoked is None:
            await record(store, audit.TOKEN_REVOKE, args.name, NotFoundError.code)
            print(f"error: no live token named {args.name!r}", file=sys.stderr)
            return EXIT_FAILED
        await record(store, audit.TOKEN_REVOKE, args.name)
        print(f"token {args.name!r} revoked", file=sys.stderr)
        return 0

    return with_store(settings, revoke)
