"""``dns01-broker renew``, ``revoke``, ``certificates``, ``ca`` and ``account``: keeping
the certificates of the lineages under a directory, and the CAs and accounts behind them."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import lineage
from broker.acme import one_third_rule
from broker.acme.cas import CATALOG
from broker.cli import issuing
from broker.cli.runner import EXIT_CONFIG, EXIT_FAILED, fail, run_value
from broker.cli.targets import broker_target, run_acme, target_options
from broker.cli.terminal import Terminal
from broker.config import Settings
from broker.errors import BrokerError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    target = target_options()
    issuing.register(commands, common, target)
    renew = commands.add_parser(
        "renew", parents=[common, target], help="renew a lineage, or every lineage, when due"
    )
    which = renew.add_mutually_exclusive_group(required=True)
    which.add_argument("--out", type=Path, help="one certificate directory")
    which.add_argument("--all", action="store_true", help="every lineage under --config-dir")
    renew.add_argument("--config-dir", type=Path, help="where lineages live")
    renew.add_argument("--force", action="store_true", help="renew now, due or not")
    renew.add_argument(
        "--jitter", type=float, default=0.0,
        help="first wait a random time up to this many seconds (spreads load on the CA)",
    )  # fmt: skip
    renew.add_argument(
        "--deploy-hook",
        help="shell command run for each renewed lineage (after the lineage's own hook), with "
        "RENEWED_LINEAGE and RENEWED_DOMAINS set",
    )
    renew.set_defaults(run=_renew)

    revoke = commands.add_parser("revoke", parents=[common], help="revoke a certificate")
    revoke.add_argument("--out", required=True, type=Path, help="certificate directory")
    revoke.add_argument("--reason", type=int, help="RFC 5280 reason code (e.g. 4 superseded)")
    revoke.set_defaults(run=_revoke)

    listing = commands.add_parser(
        "certificates", parents=[common], help="the lineages here, with expiry and renewal"
    )
    listing.add_argument("--config-dir", type=Path, help="where lineages live")
    listing.set_defaults(run=_list)

    ca = commands.add_parser("ca", help="certificate authorities")
    ca_commands = ca.add_subparsers(required=True, metavar="ACTION")
    ca_list = ca_commands.add_parser("list", parents=[common], help="the CAs known by name")
    ca_list.set_defaults(run=_ca_list)
    ca_show = ca_commands.add_parser("show", parents=[common], help="what a CA's directory says")
    shown = ca_show.add_mutually_exclusive_group(required=True)
    shown.add_argument("name", nargs="?", help="a CA by name")
    shown.add_argument("--directory", help="or its directory URL")
    ca_show.add_argument("--ca-bundle", help="CA certificates for the ACME server's TLS")
    ca_show.set_defaults(run=_ca_show)

    account = commands.add_parser("account", help="the ACME account of a lineage")
    account_commands = account.add_subparsers(required=True, metavar="ACTION")
    rollover = account_commands.add_parser(
        "rollover", parents=[common], help="give the account a new key (RFC 8555 7.3.5)"
    )
    rollover.add_argument("--out", required=True, type=Path, help="certificate directory")
    rollover.set_defaults(run=_rollover)
    deactivate = account_commands.add_parser(
        "deactivate", parents=[common], help="deactivate the account for good (RFC 8555 7.3.6)"
    )
    deactivate.add_argument("--out", required=True, type=Path, help="certificate directory")
    deactivate.add_argument("--yes", action="store_true", help="do not ask")
    deactivate.set_defaults(run=_deactivate)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What renewing one lineage came to, for the summary."""

    lineage: Path
    result: str
    failed: bool = False


def _renew(args: argparse.Namespace, settings: Settings) -> int:
    if args.jitter > 0:
        run_value(asyncio.sleep(random.SystemRandom().uniform(0, args.jitter)))
    if args.out is not None:
        outcome = _renew_one(args.out, args, settings)
        print(outcome.result)
        return EXIT_FAILED if outcome.failed else 0
    config_dir = args.config_dir or lineage.default_config_dir()
    found = lineage.lineages(config_dir)
    if not found:
        print(f"no lineages under {config_dir}")
        return 0
    outcomes = [_renew_one(out, args, settings) for out in found]
    _summary(outcomes)
    return EXIT_FAILED if any(o.failed for o in outcomes) else 0


def _renew_one(out: Path, args: argparse.Namespace, settings: Settings) -> Outcome:
    """One lineage: renewed when due (or forced), its deploy hook run; a failure is an
    outcome, never the end of the others."""
    try:
        params = lineage.load_params(out)
        if not args.force:
            decision = run_acme(lineage.renewal_decision(out))
            if decision is None:
                return Outcome(out, "failed: the CA could not be asked", failed=True)
            if not decision.due:
                return Outcome(out, f"not due: renewal at {decision.at:%Y-%m-%d %H:%M} UTC")
        server = args.server or params.server
        target = broker_target(argparse.Namespace(server=server, token=args.token), settings)
        print(f"renewing {', '.join(params.names)}", flush=True)
        issued = run_acme(lineage.issue_into(out, params, target, replace=True))
    except BrokerError as exc:
        return Outcome(out, f"failed: {exc.detail}", failed=True)
    if issued is None:
        return Outcome(out, "failed: see the error above", failed=True)
    result = f"renewed: valid until {issued.not_after:%Y-%m-%d %H:%M} UTC"
    environment = {
        **os.environ,
        "RENEWED_LINEAGE": str(out),
        "RENEWED_DOMAINS": " ".join(issued.names),
    }
    for hook in (params.deploy_hook, args.deploy_hook):
        if not hook:
            continue
        done = subprocess.run(hook, shell=True, check=False, env=environment)  # noqa: S602 - the operator's own command
        if done.returncode != 0:
            return Outcome(
                out, f"{result}; the deploy hook {hook!r} exited {done.returncode}", True
            )
    return Outcome(out, result)


def _summary(outcomes: list[Outcome]) -> None:
    width = max(len(o.lineage.name) for o in outcomes)
    print(f"{'LINEAGE':<{width}}  RESULT")
    for outcome in outcomes:
        print(f"{outcome.lineage.name:<{width}}  {outcome.result}")
    failed = sum(o.failed for o in outcomes)
    print(f"{len(outcomes)} lineage(s), {failed} failed")


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    if run_acme(lineage.revoke_from(args.out, args.reason), done=True) is None:
        return EXIT_FAILED
    print(f"revoked the certificate in {args.out}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    config_dir = args.config_dir or lineage.default_config_dir()
    found = lineage.lineages(config_dir)
    if not found:
        print(f"no lineages under {config_dir}")
        return 0
    print(f"{'LINEAGE':<28} {'EXPIRES (UTC)':<17} {'RENEWAL (UTC)':<17} CA / NAMES")
    for out in found:
        params = lineage.load_params(out)
        try:
            certificate = lineage.certificate_of(out)
        except (OSError, ValueError):
            print(f"{out.name:<28} {'(no certificate)':<17}")
            continue
        renewal = one_third_rule(certificate)
        expires = certificate.not_valid_after_utc
        print(
            f"{out.name:<28} {expires:%Y-%m-%d %H:%M} {renewal.at:%Y-%m-%d %H:%M}  "
            f"{params.ca or params.directory}: {', '.join(params.names)}"
        )
    return 0


def _ca_list(args: argparse.Namespace, settings: Settings) -> int:
    print(f"{'NAME':<20} {'EAB':<4} DIRECTORY")
    for ca in CATALOG:
        print(f"{ca.name:<20} {'yes' if ca.eab_required else 'no':<4} {ca.directory}")
    for name, extra in settings.acme.cas.items():
        print(f"{name:<20} {'yes' if extra.eab_required else 'no':<4} {extra.directory}  (config)")
    return 0


def _ca_show(args: argparse.Namespace, settings: Settings) -> int:
    directory = args.directory
    if directory is None:
        known = {ca.name: ca.directory for ca in CATALOG}
        known.update({name: extra.directory for name, extra in settings.acme.cas.items()})
        if args.name not in known:
            print(f"error: no CA named {args.name!r}; see dns01-broker ca list", file=sys.stderr)
            return EXIT_CONFIG
        directory = known[args.name]
    ca_bundle = args.ca_bundle or settings.acme.ca_bundle
    meta = run_value(
        lineage.fetch_directory(directory, None if ca_bundle is None else str(ca_bundle))
    )
    print(f"directory:        {meta.url}")
    print(f"terms of service: {meta.terms_of_service or '(none)'}")
    print(f"website:          {meta.website or '(none)'}")
    print(f"needs EAB:        {'yes' if meta.external_account_required else 'no'}")
    print(f"renewal info:     {'yes (RFC 9773)' if meta.renewal_info else 'no'}")
    print(f"CAA identities:   {', '.join(meta.caa_identities) or '(none)'}")
    if not meta.profiles:
        print("profiles:         (none)")
    for number, (name, description) in enumerate(sorted(meta.profiles.items())):
        print(f"{'profiles:' if number == 0 else '':<17} {name}: {description}")
    return 0


def _rollover(args: argparse.Namespace, settings: Settings) -> int:
    account = run_acme(lineage.rollover_account(args.out))
    if account is None:
        return EXIT_FAILED
    print(f"the account in {account} has a new key; the old one no longer works")
    print("every lineage using this account file goes on with the new key")
    return 0


def _deactivate(args: argparse.Namespace, settings: Settings) -> int:
    terminal = Terminal.of(args.yes)
    if not args.yes:
        if not terminal.interactive:
            print("error: deactivation cannot be undone: give --yes", file=sys.stderr)
            return EXIT_CONFIG
        if not terminal.confirm("Deactivate the account for good?", default=False):
            return fail("not deactivated")
    account = run_acme(lineage.deactivate_account(args.out))
    if account is None:
        return EXIT_FAILED
    print(f"the account in {account} is deactivated (its key kept as {account.name}.deactivated)")
    print("the next issue or renewal at this CA makes a new account")
    return 0
