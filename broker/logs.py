"""Log set-up: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs every request its parser refuses (a NUL in a header, a line too long)
    as an ERROR with a traceback, though it answers 400. That is the client's fault, not
    the broker's: keep it as one WARNING line without the traceback, so hostile input
    cannot fill the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = error.message.strip().splitlines()[0] if error.message.strip() else "bad HTTP"
            record.msg = f"{record.getMessage()}: refused with 400 ({reason})"
            record.args = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "google")
"""Cloud SDKs log whole requests and answers at DEBUG: an assumed role's temporary secret
key and session token, OAuth access tokens. They stay at INFO whatever ``log.level``
says, since secrets are never logged."""


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING if level != "DEBUG" else level)
    logging.getLogger("alembic").setLevel(logging.WARNING if level != "DEBUG" else level)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedHttpFilter) for f in server.filters):
        server.addFilter(MalformedHttpFilter())
