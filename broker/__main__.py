"""The ``dns01-broker`` command: the only place that prints or exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from broker import lineage, logs
from broker.acme import AcmeError, AcmeEvent, ExternalAccountBinding
from broker.api.bodies import timestamp
from broker.api.tokens import token_json
from broker.auth import issue_token
from broker.config import (
    TOKEN_ENV,
    ConfigError,
    Settings,
    acmedns_zone,
    load_settings,
)
from broker.dnsname import ChallengeTarget, validate_value
from broker.errors import BrokerError, InvalidRequestError
from broker.importer import import_accounts, read_accounts
from broker.propagation import PropagationChecker, PropagationReport
from broker.runtime import Broker, inspect_providers, local_nameservers, open_store, secret_box
from broker.store import Store
from broker.store.schema import HEAD as SCHEMA_HEAD
from broker.tsig import ALGORITHMS, DEFAULT_ALGORITHM
from broker.values import MAX_WAIT_SECONDS, parse_duration

T = TypeVar("T")
EXIT_CONFIG = 2
EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print("configuration is not valid:", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        code = args.run(args, settings)
    except BrokerError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file (default: $DNS01_BROKER_CONFIG, else built-in defaults)",
    )
    parser = argparse.ArgumentParser(prog="dns01-broker", parents=[common])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the broker")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate",
        parents=[common],
        help="bring the store's schema up to this version (every command does so on opening)",
    )
    migrate.set_defaults(run=_migrate)

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

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(required=True, metavar="ACTION")
    check = config_commands.add_parser("check", parents=[common], help="validate and exit")
    check.set_defaults(run=_config_check)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="wait until every authoritative nameserver of a name serves a TXT value",
    )
    name = check.add_mutually_exclusive_group(required=True)
    name.add_argument("--fqdn", help="the challenge name, _acme-challenge.www.example.com")
    name.add_argument("--domain", help="or the certificate name, www.example.com")
    check.add_argument("--value", required=True)
    check.add_argument(
        "--timeout",
        type=_wait_seconds,
        help="seconds or text such as 90s, 5m; at most 600 (default propagation.timeout)",
    )
    check.add_argument("--once", action="store_true", help="one round, no waiting")
    check.set_defaults(run=_check)

    _add_issue_commands(commands, common)

    importing = commands.add_parser("import", help="bring accounts over from another system")
    import_commands = importing.add_subparsers(required=True, metavar="SOURCE")
    acmedns = import_commands.add_parser(
        "acme-dns", parents=[common], help="accounts of an acme-dns database"
    )
    acmedns.add_argument(
        "--db", required=True, help="acme-dns SQLite file, or postgres://user:pass@host/db"
    )
    acmedns.set_defaults(run=_import_acmedns)
    return parser


def _wait_seconds(text: str) -> float:
    """A wait on the command line, bounded as the API bounds one: (0, 600] seconds."""
    try:
        return parse_duration(text, maximum=MAX_WAIT_SECONDS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(coro_factory: Callable[[], Awaitable[int]]) -> int:
    """Run on uvloop where it is installed, else on the default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_as_coroutine(coro_factory))


async def _as_coroutine(factory: Callable[[], Awaitable[int]]) -> int:
    return await factory()


def _run_value(awaitable: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await awaitable

    with asyncio.Runner() as runner:
        return runner.run(wrap())


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    logs.configure(settings.log.level, settings.log.format)

    async def serve() -> int:
        broker = Broker(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await broker.start()
        try:
            await stop.wait()
        finally:
            await broker.stop()
        return 0

    return _run(serve)


def _with_store(settings: Settings, action: Callable[[Store], Awaitable[int]]) -> int:
    async def run() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return _run(run)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def report(_: Store) -> int:
        print(f"store {settings.store.describe()}: schema at version {SCHEMA_HEAD}")
        return 0

    return _with_store(settings, report)


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

    code = _with_store(settings, create)
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

    return _with_store(settings, listing)


def _token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke(store: Store) -> int:
        record = await store.revoke_token(args.name, time.time())
        if record is None:
            print(f"error: no live token named {args.name!r}", file=sys.stderr)
            return EXIT_FAILED
        print(f"token {args.name!r} revoked", file=sys.stderr)
        return 0

    return _with_store(settings, revoke)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    if args.fqdn is not None:
        target = ChallengeTarget.from_fqdn(args.fqdn)
    else:
        target = ChallengeTarget.from_domain(args.domain)
    value = validate_value(args.value)
    servers = local_nameservers(settings, settings.dns.addresses if settings.dns.enabled else [])

    async def check() -> int:
        checker = PropagationChecker(settings.propagation, local_nameservers=servers)
        try:
            if args.once:
                report = await checker.check(target.fqdn, value)
                _print_round(report)
            else:
                report = await checker.wait(
                    target.fqdn, value, timeout=args.timeout, on_update=_print_round
                )
        finally:
            await checker.close()
        if report.ready:
            print(f"ready: every nameserver serves the value ({report.elapsed:.3f} s)")
            return 0
        print(f"not ready: {report.error or 'some nameservers lack the value'}")
        return 1

    return _run(check)


def _print_round(report: PropagationReport) -> None:
    seen = sum(1 for server in report.servers if server.seen)
    where = f"{report.target} in {report.zone}" if report.zone else report.target
    print(f"{report.elapsed:8.3f}s  {where}: {seen}/{len(report.servers)} serve the value")
    for server in report.servers:
        if server.seen:
            state = "serves it"
        elif server.error:
            state = f"error: {server.error}"
        else:
            state = "answers without it" if server.answered else "not asked yet"
        print(f"           {server.nameserver} {server.address} port {server.port}: {state}")
    sys.stdout.flush()


def _add_issue_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--out", required=True, type=Path, help="certificate directory")
    target.add_argument("--server", help="a broker's URL (default: the local broker of the config)")
    target.add_argument(
        "--token",
        help="token for --server (or $DNS01_BROKER_TOKEN; default: the local admin token)",
    )
    issue = commands.add_parser(
        "issue", parents=[common, target], help="get a certificate, DNS-01 solved by a broker"
    )
    issue.add_argument("-d", "--domain", action="append", required=True, dest="domains")
    issue.add_argument("--directory", help="ACME directory URL (default acme.directory)")
    issue.add_argument("--email")
    issue.add_argument("--eab-kid")
    issue.add_argument("--eab-hmac")
    issue.add_argument("--key-type", default="ec256",
                       choices=["ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"])  # fmt: skip
    issue.add_argument("--ca-bundle", help="CA certificates for the ACME server's TLS")
    issue.add_argument("--preferred-chain", help="issuer name of an alternate chain to prefer")
    issue.set_defaults(run=_issue)
    renew = commands.add_parser("renew", parents=[common, target], help="renew when due")
    renew.add_argument("--force", action="store_true", help="renew now")
    renew.add_argument("--deploy-hook", help="shell command run after a new certificate")
    renew.set_defaults(run=_renew)
    revoke = commands.add_parser("revoke", parents=[common], help="revoke the certificate")
    revoke.add_argument("--out", required=True, type=Path, help="certificate directory")
    revoke.add_argument("--reason", type=int, help="RFC 5280 reason code (e.g. 4 superseded)")
    revoke.set_defaults(run=_revoke)


def _broker_target(args: argparse.Namespace, settings: Settings) -> lineage.Broker:
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.server:
        if not token:
            raise InvalidRequestError("--server needs --token (or $DNS01_BROKER_TOKEN)")
        return lineage.Broker(args.server, token)
    if token is None:
        try:
            token = settings.auth.bootstrap_token_file.read_text().strip()
        except OSError as exc:
            raise InvalidRequestError(
                f"no --token and the admin token file {settings.auth.bootstrap_token_file} "
                f"cannot be read ({exc.strerror}); is the broker running here?"
            ) from None
    host, port = settings.http.address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return lineage.Broker(
        f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}", token
    )


def _print_event(event: AcmeEvent) -> None:
    about = f" {event.domain}" if event.domain else ""
    detail = f": {event.detail}" if event.detail else ""
    print(f"  {event.kind.value}{about}{detail}", flush=True)


def _issue(args: argparse.Namespace, settings: Settings) -> int:
    params = lineage.IssueParams(
        names=lineage.names_of(args.domains),
        directory=args.directory or settings.acme.directory,
        key_type=args.key_type,
        server=args.server,
        email=args.email,
        ca_bundle=args.ca_bundle,
        preferred_chain=args.preferred_chain,
        propagation_timeout=settings.acme.propagation_timeout,
    )
    eab = ExternalAccountBinding(args.eab_kid, args.eab_hmac) if args.eab_kid else None
    target = _broker_target(args, settings)
    print(f"ordering {', '.join(params.names)} from {params.directory} (DNS via {target.url})")
    issued = _run_acme(lineage.issue_into(args.out, params, target, eab=eab, on_event=_print_event))
    if issued is None:
        return EXIT_FAILED
    print(f"certificate valid until {issued.not_after:%Y-%m-%d %H:%M} UTC, in {args.out}")
    return 0


def _renew(args: argparse.Namespace, settings: Settings) -> int:
    params = lineage.load_params(args.out)
    if not args.force:
        decision = _run_acme(lineage.renewal_decision(args.out))
        if decision is None:
            return EXIT_FAILED
        if not decision.due:
            print(f"not due: renewal at {decision.at:%Y-%m-%d %H:%M} UTC ({decision.reason})")
            return 0
    if args.server is None and params.server is not None:
        args.server = params.server
    target = _broker_target(args, settings)
    print(f"renewing {', '.join(params.names)}")
    issued = _run_acme(
        lineage.issue_into(args.out, params, target, replace=True, on_event=_print_event)
    )
    if issued is None:
        return EXIT_FAILED
    print(f"renewed: valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
    if args.deploy_hook:
        hook = subprocess.run(  # noqa: S602 - the operator's own hook command
            args.deploy_hook,
            shell=True,
            check=False,
            env={**os.environ, "RENEWED_LINEAGE": str(args.out)},
        )
        if hook.returncode != 0:
            print(f"error: the deploy hook exited {hook.returncode}", file=sys.stderr)
            return EXIT_FAILED
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    if _run_acme(lineage.revoke_from(args.out, args.reason), done=True) is None:
        return EXIT_FAILED
    print(f"revoked the certificate in {args.out}")
    return 0


def _run_acme(awaitable: Awaitable[T], *, done: bool = False) -> T | None:
    """Run an ACME step; the CA's problem (or the network's) is printed, None returned."""
    try:
        result = _run_value(awaitable)
    except (AcmeError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return True if done and result is None else result  # type: ignore[return-value]


def _import_acmedns(args: argparse.Namespace, settings: Settings) -> int:
    rows = read_accounts(args.db)

    async def run(store: Store) -> int:
        report = await import_accounts(store, rows)
        for username, reason in report.invalid:
            print(f"skipped {username}: {reason}", file=sys.stderr)
        print(
            f"imported {len(report.imported)} acme-dns account(s); "
            f"{len(report.existing)} already here, {len(report.invalid)} not valid"
        )
        zone = acmedns_zone(settings)
        if report.imported and zone is not None:
            print(
                f"their names are now <subdomain>.{zone}; CNAMEs point at the old acme-dns "
                "domain, so set acmedns.zone to it (or delegate it here)"
            )
        return 1 if report.invalid and not report.imported else 0

    return _with_store(settings, run)


def _config_check(args: argparse.Namespace, settings: Settings) -> int:
    print("configuration is valid")
    print(f"  http: {settings.http.listen}")
    dns_state = ", ".join(settings.dns.listen) if settings.dns.enabled else "disabled"
    print(f"  dns: {dns_state}")
    print(f"  store: {settings.store.describe()}")
    failed = 0
    for report in _run_value(inspect_providers(settings)):
        zones = ", ".join(report.zones) or "(none)"
        state = "ok" if report.health["ok"] else f"FAILED: {report.health.get('detail')}"
        print(f"  provider {report.name} ({report.type}): {zones} [{state}]")
        failed += not report.health["ok"]
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
