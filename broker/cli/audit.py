"""``dns01-broker audit``: the audit log, newest first, read from the configured store
directly (the same filters as GET /v1/audit)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from broker.api.audit import MAX_LIMIT, audit_query, cursor, event_json
from broker.api.bodies import timestamp
from broker.cli.runner import EXIT_CONFIG, with_store
from broker.config import Settings
from broker.errors import InvalidRequestError
from broker.store import Store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    audit = commands.add_parser("audit", parents=[common], help="show the audit log, newest first")
    audit.add_argument("--since", help="RFC 3339 time, e.g. 2026-12-03T10:00:00Z")
    audit.add_argument("--until", help="RFC 3339 time (events before it)")
    audit.add_argument("--actor", help="token name, acmedns:<username>, cli:<user>, or -")
    audit.add_argument("--action", help="e.g. present, cleanup, token.create, access")
    audit.add_argument(
        "--limit", default="100", help=f"events to show, 1 to {MAX_LIMIT} (default 100)"
    )
    audit.add_argument("--cursor", help="continue after the page that printed this cursor")
    audit.add_argument("--json", action="store_true", help="print JSON as GET /v1/audit does")
    audit.set_defaults(run=_audit)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    params = {
        name: value
        for name in ("since", "until", "actor", "action", "limit", "cursor")
        if (value := getattr(args, name)) is not None
    }
    try:
        query = audit_query(params)
    except InvalidRequestError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return EXIT_CONFIG

    async def show(store: Store) -> int:
        events = await store.audit_events(query)
        following = cursor(events[-1]) if len(events) == query.limit else None
        if args.json:
            print(json.dumps({"events": [event_json(e) for e in events], "next": following}))
            return 0
        print(
            f"{'TIME':<24} {'ACTOR':<20} {'SOURCE':<16} {'FACE':<9} {'ACTION':<26} "
            f"{'RESULT':<16} TARGET"
        )
        for event in events:
            print(
                f"{timestamp(event.at) or '-':<24} {event.actor:<20} {event.source:<16} "
                f"{event.face:<9} {event.action:<26} {event.result:<16} {event.target}"
            )
        if following is not None:
            print(f"more: --cursor {following}", file=sys.stderr)
        return 0

    return with_store(settings, show)
