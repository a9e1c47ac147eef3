"""Value types that settings on both sides of the layers share: durations and secrets.

Providers import these (and ``broker.dnsname``) without importing the broker's own
settings, so dependencies keep pointing one way.
"""

from __future__ import annotations

import base64
import math
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, SecretStr

MAX_DURATION = 3650 * 86400.0
"""Ten years: the longest duration anything accepts (a token's lifetime included)."""

MAX_WAIT_SECONDS = 600.0
"""The longest a caller may ask to wait for propagation (API and CLI alike)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SHAPE = "a duration is a number of seconds or text such as '90d', '1h30m', '45s'"


def parse_duration(value: object, *, maximum: float = MAX_DURATION) -> float:
    """Seconds from a number or text such as ``90d``, ``1h30m``, ``45s``, in (0, maximum]."""
    if isinstance(value, bool):
        raise ValueError(_SHAPE)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and _DURATION.sub("", text).strip() == "":
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration: {_SHAPE}")
    else:
        raise ValueError(_SHAPE)
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    if seconds > maximum:
        raise ValueError(f"a duration may be at most {format_duration(maximum)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit that states ``seconds`` exactly: ``3650d``, ``90m``, ``45s``."""
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if unit != "w" and seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def resolve_secret(value: object) -> object:
    """``env:NAME`` reads an environment variable, ``file:/path`` a file's first line."""
    if not isinstance(value, str):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set (referenced as env:{name})")
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


class RecordIds:
    """Random record ids (12 bytes, URL-safe base64: 16 characters) from a pool of
    ``os.urandom`` bytes refilled 4 KiB at a time: as unguessable as
    ``secrets.token_urlsafe(12)``, without a system call per id on the present path."""

    SIZE = 12
    POOL = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at + self.SIZE > len(self._pool):
            self._pool, self._at = os.urandom(self.POOL), 0
        chunk = self._pool[self._at : self._at + self.SIZE]
        self._at += self.SIZE
        return base64.urlsafe_b64encode(chunk).decode("ascii")


new_record_id = RecordIds()
