"""Request bodies as Go clients send them: JSON whatever the Content-Type, keys matched
case-insensitively (the last of several spellings wins, as in Go's encoding/json)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class NotJsonObjectError(ValueError):
    """The body is not a JSON object (or ``null``, where ``allow_null``)."""


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_object(raw: bytes, *, allow_null: bool = False) -> dict[str, Any]:
    """A JSON object with lower-cased keys; ``null`` is an empty object if allowed."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise NotJsonObjectError("not JSON") from None
    if data is None and allow_null:
        return {}
    if not isinstance(data, dict):
        raise NotJsonObjectError("not an object")
    return {key.lower(): value for key, value in data.items()}


def compact_json(status: int, body: dict[str, Any]) -> web.Response:
    """One line, no spaces: clients parse these responses with sed and grep."""
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
    )
