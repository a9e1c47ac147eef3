"""``dns01-broker issue``, ``renew`` and ``revoke``: certificates got through ACME here,
the DNS part through a broker (the local one, or another with a scoped token)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from broker import lineage
from broker.acme import AcmeError, AcmeEvent, ExternalAccountBinding
from broker.cli.runner import EXIT_FAILED, run_value
from broker.config import TOKEN_ENV, Settings
from broker.errors import InvalidRequestError

T = TypeVar("T")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
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
        result = run_value(awaitable)
    except (AcmeError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return True if done and result is None else result  # type: ignore[return-value]
