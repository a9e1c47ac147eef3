"""Where the DNS part of an issuance goes (a broker and a token), and running an ACME
step so that the CA's problem is printed rather than raised."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable
from typing import TypeVar

from broker import lineage
from broker.acme import AcmeError
from broker.cli.runner import run_value
from broker.config import TOKEN_ENV, Settings
from broker.errors import InvalidRequestError

T = TypeVar("T")


def target_options() -> argparse.ArgumentParser:
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--server", help="a broker's URL (default: the local broker of the config)")
    target.add_argument(
        "--token",
        help="token for --server (or $DNS01_BROKER_TOKEN; default: the local admin token)",
    )
    return target


def broker_target(args: argparse.Namespace, settings: Settings) -> lineage.Broker:
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
    scheme = "https" if settings.http.tls_cert_file is not None else "http"
    return lineage.Broker(
        f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}", token
    )


def run_acme(awaitable: Awaitable[T], *, done: bool = False) -> T | None:
    """Run an ACME step; the CA's problem (or the network's) is printed, None returned."""
    try:
        result = run_value(awaitable)
    except (AcmeError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return True if done and result is None else result  # type: ignore[return-value]
