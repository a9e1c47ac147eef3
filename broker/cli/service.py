"""``dns01-broker serve``, ``migrate``, ``config check``, ``check`` and ``import``: the
broker itself and what an operator asks of its configuration and store."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from typing import Any

from broker import logs
from broker.cli.runner import EXIT_FAILED, run, run_value, with_store
from broker.config import Settings, acmedns_zone
from broker.dnsname import ChallengeTarget, validate_value
from broker.importer import import_accounts, read_accounts
from broker.oidc.settings import OidcIssuer
from broker.oidc.verify import OidcVerifier
from broker.propagation import PropagationChecker, PropagationReport
from broker.runtime import Broker, inspect_providers, local_nameservers
from broker.store import Store
from broker.store.schema import HEAD as SCHEMA_HEAD
from broker.values import MAX_WAIT_SECONDS, parse_duration


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the broker")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate",
        parents=[common],
        help="bring the store's schema up to this version (every command does so on opening)",
    )
    migrate.set_defaults(run=_migrate)

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

    importing = commands.add_parser("import", help="bring accounts over from another system")
    import_commands = importing.add_subparsers(required=True, metavar="SOURCE")
    acmedns = import_commands.add_parser(
        "acme-dns", parents=[common], help="accounts of an acme-dns database"
    )
    acmedns.add_argument(
        "--db", required=True, help="acme-dns SQLite file, or postgres://user:pass@host/db"
    )
    acmedns.set_defaults(run=_import_acmedns)


def _wait_seconds(text: str) -> float:
    """A wait on the command line, bounded as the API bounds one: (0, 600] seconds."""
    try:
        return parse_duration(text, maximum=MAX_WAIT_SECONDS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    logs.configure(settings.log.level, settings.log.format)

    async def serve() -> int:
        broker = Broker(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await broker.start()
        # What start-up built (modules, settings, the zones restored) lives as long as the
        # process: frozen out of the collector, so its full passes do not rescan it.
        gc.collect()
        gc.freeze()
        try:
            await stop.wait()
        finally:
            await broker.stop()
            # Stopped cleanly: a further SIGTERM or SIGINT (a supervisor repeating itself)
            # must not kill the interpreter while it exits. The loop would restore the
            # default action when it closes, so its handlers go first.
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
        return 0

    return run(serve)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def report(_: Store) -> int:
        print(f"store {settings.store.describe()}: schema at version {SCHEMA_HEAD}")
        return 0

    return with_store(settings, report)


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

    return run(check)


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

    return with_store(settings, run)


def _config_check(args: argparse.Namespace, settings: Settings) -> int:
    print("configuration is valid")
    print(f"  http: {settings.http.listen}")
    dns_state = ", ".join(settings.dns.listen) if settings.dns.enabled else "disabled"
    print(f"  dns: {dns_state}")
    print(f"  store: {settings.store.describe()}")
    failed = 0
    for report in run_value(inspect_providers(settings)):
        zones = ", ".join(report.zones) or "(none)"
        state = "ok" if report.health["ok"] else f"FAILED: {report.health.get('detail')}"
        print(f"  provider {report.name} ({report.type}): {zones} [{state}]")
        failed += not report.health["ok"]
    for issuer, problem in run_value(_check_issuers(settings)):
        keys = f"keys from {issuer.jwks_file}" if issuer.jwks_file else "keys by discovery"
        state = "ok" if problem is None else f"FAILED: {problem}"
        print(f"  oidc issuer {issuer.name}: {issuer.issuer}, {keys}, "
              f"{len(issuer.rules)} rule(s) [{state}]")  # fmt: skip
        failed += problem is not None
    return EXIT_FAILED if failed else 0


async def _check_issuers(settings: Settings) -> list[tuple[OidcIssuer, str | None]]:
    verifier = OidcVerifier(settings.oidc)
    try:
        return await verifier.check()
    finally:
        await verifier.close()
