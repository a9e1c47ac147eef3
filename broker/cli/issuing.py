"""``dns01-broker issue``: the steps every ACME client walks a person through — the names,
the CA, the account and its terms, the challenges (through a broker), the result — asked
on a terminal, given as options in scripts."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker import lineage
from broker.acme import ExternalAccountBinding, one_third_rule
from broker.acme.cas import CATALOG
from broker.auth import Principal
from broker.cli.runner import EXIT_CONFIG, EXIT_FAILED, fail, run_value
from broker.cli.targets import broker_target, run_acme
from broker.cli.terminal import Progress, Terminal
from broker.config import Settings
from broker.dnsname import ChallengeTarget
from broker.errors import BrokerError

KEY_TYPES = ["ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"]


def register(
    commands: Any, common: argparse.ArgumentParser, target: argparse.ArgumentParser
) -> None:
    issue = commands.add_parser(
        "issue", parents=[common, target], help="get a certificate, DNS-01 solved by a broker"
    )
    issue.add_argument(
        "-d", "--domain", action="append", default=[], dest="domains",
        help="a name (repeat for more; *.example.com for a wildcard); asked when missing",
    )  # fmt: skip
    issue.add_argument("--out", type=Path, help="certificate directory (default: the lineage's)")
    issue.add_argument("--config-dir", type=Path, help="where lineages live")
    issue.add_argument("--ca", help="a CA by name (see: dns01-broker ca list)")
    issue.add_argument("--directory", help="or any CA's ACME directory URL")
    issue.add_argument("--profile", help="an ACME profile the CA offers (see: ca show)")
    issue.add_argument("--agree-tos", action="store_true", help="agree to the CA's terms")
    issue.add_argument("--non-interactive", action="store_true", help="never ask")
    issue.add_argument("--email")
    issue.add_argument("--eab-kid")
    issue.add_argument("--eab-hmac")
    issue.add_argument("--key-type", default="ec256", choices=KEY_TYPES)
    issue.add_argument("--ca-bundle", help="CA certificates for the ACME server's TLS")
    issue.add_argument("--preferred-chain", help="issuer name of an alternate chain to prefer")
    issue.add_argument(
        "--deploy-hook", help="shell command run after each renewal of this lineage (kept)"
    )
    issue.add_argument(
        "--persist",
        action="store_true",
        help="use dns-persist-01 where the CA offers it: the broker keeps a standing grant "
        "for this ACME account at _validation-persist.<name> (the token needs the persist "
        "right); names the CA offers it not for use dns-01 (kept for renewals)",
    )
    issue.set_defaults(run=_issue)


@dataclass(frozen=True, slots=True)
class Choice:
    """A CA as offered: by name from the catalog or the config, or by its URL."""

    name: str | None
    directory: str
    eab_required: bool = False
    eab_help: str = ""


class Refused(Exception):
    """A step that cannot go on; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _issue(args: argparse.Namespace, settings: Settings) -> int:
    terminal = Terminal.of(args.non_interactive)
    try:
        return _walk(args, settings, terminal)
    except Refused as refused:
        if refused.code == EXIT_CONFIG:
            print(f"dns01-broker issue: error: {refused}", file=sys.stderr)
            return EXIT_CONFIG
        return fail(str(refused))


def _walk(args: argparse.Namespace, settings: Settings, terminal: Terminal) -> int:
    if args.ca_bundle is None and settings.acme.ca_bundle is not None:
        args.ca_bundle = str(settings.acme.ca_bundle)
    target = broker_target(args, settings)
    token = run_value(lineage.token_info(target, args.ca_bundle))
    names = _names(args, terminal, token)
    if args.persist and not (token.admin or token.persist):
        raise Refused(
            f"--persist needs a token with the persist right: token {token.name!r} has none "
            "(an admin makes one with `dns01-broker token create --persist`)"
        )
    choice = _ca(args, settings, terminal)
    eab = _eab(args, choice)
    config_dir: Path | None = args.config_dir
    if config_dir is None and args.out is None:
        config_dir = lineage.default_config_dir()
    out: Path = args.out or lineage.lineage_dir(config_dir or Path(), names)
    account = None if config_dir is None else lineage.account_path(config_dir, choice.directory)
    _agree(account or out / lineage.ACCOUNT_FILE, choice.directory, args, terminal)
    params = lineage.IssueParams(
        names=names,
        directory=choice.directory,
        key_type=args.key_type,
        server=args.server,
        email=args.email,
        ca_bundle=args.ca_bundle,
        preferred_chain=args.preferred_chain,
        propagation_timeout=settings.acme.propagation_timeout,
        profile=args.profile,
        ca=choice.name,
        deploy_hook=args.deploy_hook,
        account=None if account is None else str(account),
        persist=args.persist,
    )
    terminal.say(f"ordering {', '.join(names)} from {choice.name or choice.directory}")
    terminal.say(f"  DNS-01 through the broker at {target.url}")
    if args.persist:
        terminal.say(
            "  dns-persist-01 where the CA offers it: a standing grant for this account stays "
            "in DNS after the order (see: dns01-broker persist list)"
        )
    issued = run_acme(lineage.issue_into(out, params, target, eab=eab, on_event=Progress(terminal)))
    if issued is None:
        return EXIT_FAILED
    renewal = one_third_rule(lineage.certificate_of(out))
    terminal.say(f"certificate for {', '.join(issued.names)}")
    terminal.say(f"  valid until {issued.not_after:%Y-%m-%d %H:%M} UTC")
    terminal.say(f"  {out / 'fullchain.pem'}  certificate and chain (what servers load)")
    terminal.say(f"  {out / 'privkey.pem'}  private key (mode 0600)")
    terminal.say(f"  {out / 'cert.pem'}, {out / 'chain.pem'}  certificate, chain")
    terminal.say(
        f"  renewal due {renewal.at:%Y-%m-%d %H:%M} UTC ({_days(renewal.at)}; sooner if the "
        "CA's renewal information says so): `dns01-broker renew --all` does it"
    )
    return 0


def _names(args: argparse.Namespace, terminal: Terminal, token: Principal) -> tuple[str, ...]:
    """The certificate's names, each one the token may prove (checked before any ACME
    call); asked for on a terminal when no -d was given."""
    if args.domains:
        names = lineage.names_of(args.domains)
        _check_names(names)
        _check_scopes(names, token)
        return names
    if not terminal.interactive:
        raise Refused("give the names with -d (or run on a terminal to be asked)", EXIT_CONFIG)
    while True:
        answer = terminal.ask(
            "Names for the certificate (comma or space separated, *.example.com for a wildcard): ",
            lambda text: None if text.replace(",", " ").split() else "give at least one name",
        )
        names = lineage.names_of(answer.replace(",", " ").split())
        try:
            _check_names(names)
        except Refused as refused:
            terminal.say(f"  {refused}")
            continue
        uncovered = set(token.uncovered(names))
        for name in names:
            base = ChallengeTarget.from_domain(name).base[:-1]
            notes = [f"wildcard: every name one level below {base}"] if name[:2] == "*." else []
            if name in uncovered:
                notes.append(f"NOT covered by token {token.name!r}")
            terminal.say(f"  {name}{'  (' + '; '.join(notes) + ')' if notes else ''}")
        if uncovered:
            allowed = ", ".join(str(scope) for scope in token.scopes) or "(none)"
            terminal.say(f"  the token may prove names under: {allowed}; give other names")
            continue
        if terminal.confirm("Order a certificate for these names?", default=True):
            return names


def _check_names(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            ChallengeTarget.from_domain(name)
        except BrokerError as exc:
            raise Refused(exc.detail, EXIT_CONFIG) from None


def _check_scopes(names: tuple[str, ...], token: Principal) -> None:
    missing = token.uncovered(names)
    if missing:
        allowed = ", ".join(str(scope) for scope in token.scopes) or "(none)"
        raise Refused(
            f"token {token.name!r} may not prove {', '.join(missing)} (its scopes: {allowed}); "
            "ask for a token that covers them"
        )


def _ca(args: argparse.Namespace, settings: Settings, terminal: Terminal) -> Choice:
    offered = _offered(settings)
    if args.ca:
        by_name = {choice.name: choice for choice in offered}
        if args.ca not in by_name:
            known = ", ".join(sorted(n for n in by_name if n))
            raise Refused(f"no CA named {args.ca!r}; known: {known} (or give --directory)")
        return by_name[args.ca]
    if args.directory:
        return Choice(None, args.directory)
    if not terminal.interactive:
        return Choice(None, settings.acme.directory)
    terminal.say("Certificate authorities:")
    labels = [_label(choice) for choice in offered]
    return offered[terminal.choose("Which CA?", labels)]


def _offered(settings: Settings) -> list[Choice]:
    choices = [Choice(ca.name, ca.directory, ca.eab_required, ca.eab_help) for ca in CATALOG]
    for name, ca in settings.acme.cas.items():
        help_text = f"ask {ca.title or name}'s operator for an EAB key id and HMAC key"
        choices.append(Choice(name, ca.directory, ca.eab_required, help_text))
    return choices


def _label(choice: Choice) -> str:
    eab = "  (needs EAB)" if choice.eab_required else ""
    return f"{choice.name:<20} {choice.directory}{eab}"


def _eab(args: argparse.Namespace, choice: Choice) -> ExternalAccountBinding | None:
    if args.eab_kid and args.eab_hmac:
        return ExternalAccountBinding(args.eab_kid, args.eab_hmac)
    if args.eab_kid or args.eab_hmac:
        raise Refused("give both --eab-kid and --eab-hmac", EXIT_CONFIG)
    if choice.eab_required:
        raise Refused(
            f"{choice.name} needs External Account Binding: give --eab-kid and --eab-hmac. "
            f"To get them: {choice.eab_help}"
        )
    return None


def _agree(account: Path, directory: str, args: argparse.Namespace, terminal: Terminal) -> None:
    """Before ordering: the profile asked for is one the CA offers, and a new account's
    terms of service are agreed to (by option or answer)."""
    new_account = not lineage.has_account(account, directory)
    if not new_account and args.profile is None:
        return
    meta = run_value(lineage.fetch_directory(directory, args.ca_bundle))
    if args.profile is not None and args.profile not in meta.profiles:
        offered = ", ".join(meta.profiles) or "none"
        raise Refused(
            f"the CA at {directory} offers no profile {args.profile!r} (it offers: {offered})"
        )
    if not new_account or args.agree_tos:
        return
    terms = meta.terms_of_service or "(the CA publishes none)"
    if not terminal.interactive:
        raise Refused(
            f"a new account at {directory} means agreeing to its terms of service ({terms}): "
            "read them and give --agree-tos",
            EXIT_CONFIG,
        )
    terminal.say(f"The CA's terms of service: {terms}")
    if not terminal.confirm("Do you agree to them?", default=False):
        raise Refused("no account without agreeing to the terms of service")


def _days(moment: datetime) -> str:
    days = (moment - datetime.now(UTC)).days
    return f"in {days} days" if days >= 0 else "already due"
