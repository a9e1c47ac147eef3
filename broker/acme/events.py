"""Progress of an issuance, reported to an optional callback (the CLI prints them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    ORDER_CREATED = "order-created"
    AUTHORIZATION_PENDING = "authorization-pending"
    AUTHORIZATION_VALID = "authorization-valid"
    AUTHORIZATION_INVALID = "authorization-invalid"
    PRESENTING = "presenting"
    PROPAGATED = "propagated"
    CHALLENGE_ANSWERED = "challenge-answered"
    FINALIZING = "finalizing"
    CERTIFICATE_DOWNLOADED = "certificate-downloaded"
    CLEANED_UP = "cleaned-up"
    CLEANUP_FAILED = "cleanup-failed"
    PERSIST_GRANTED = "persist-granted"
    """dns-persist-01: the standing grant for the account is served (detail: the record)."""
    PERSIST_UNAVAILABLE = "persist-unavailable"
    """dns-persist-01 was asked for and the CA does not offer it: dns-01 is used."""


@dataclass(frozen=True, slots=True)
class AcmeEvent:
    """One step: ``domain`` is the certificate name it concerns (None for the order);
    ``at`` is ``time.monotonic()``."""

    kind: EventKind
    domain: str | None = None
    detail: str = ""
    at: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        parts = [self.kind.value, self.domain or "", self.detail]
        return " ".join(part for part in parts if part)


EventCallback = Callable[[AcmeEvent], object]


class Emitter:
    """Calls the callback; a failing callback is logged, never breaks the issuance."""

    def __init__(self, callback: EventCallback | None) -> None:
        self.callback = callback

    def __call__(self, kind: EventKind, domain: str | None = None, detail: str = "") -> None:
        event = AcmeEvent(kind, domain, detail)
        log.debug("%s", event)
        if self.callback is None:
            return
        try:
            self.callback(event)
        except Exception:
            log.exception("the progress callback failed on %s", event)
