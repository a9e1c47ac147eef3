"""The ``dns01-broker`` command: the only place that prints or exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from broker.cli import audit, certificates, persist, service, tokens
from broker.cli.runner import EXIT_CONFIG, EXIT_FAILED
from broker.config import ConfigError, load_settings
from broker.errors import BrokerError


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
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


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file (default: $DNS01_BROKER_CONFIG, else built-in defaults)",
    )
    top = argparse.ArgumentParser(prog="dns01-broker", parents=[common])
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    for module in (service, tokens, certificates, persist, audit):
        module.register(commands, common)
    return top
