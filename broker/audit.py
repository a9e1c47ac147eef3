"""The audit log: every token, registration, challenge and certificate event, and every
refused attempt, with who, from where, what, on what, and how it ended.

Recording must not slow the present path: ``record`` only appends to a bounded queue in
memory, and one background task writes what has gathered in one statement every
``flush_interval`` (or as soon as ``batch_size`` events wait), and once more when the
broker stops. What a crash loses is what was queued and not yet written: at most one
interval's worth of events. When the store cannot keep up (or is down), the queue fills
and further events are dropped, counted in ``dns01_broker_audit_events_dropped`` and
logged, rather than holding up the requests that made them.

No field ever holds a secret: events carry names (tokens, accounts, fqdns, order ids)
and error codes, never a token, password, TSIG secret, CSR or TXT value. Text is
bounded and stripped of control characters, as it may come from a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from broker.auth import TOKEN_PREFIX
from broker.errors import BrokerError
from broker.metrics import Metrics
from broker.store import AuditEventRecord, Store

log = logging.getLogger(__name__)

UNKNOWN = "-"
MAX_FIELD = 255
"""The longest text kept in a field (a DNS name is at most 253 characters)."""
FLUSH_INTERVAL = 0.1
BATCH_SIZE = 100
QUEUE_SIZE = 10_000

# Actions, as stored and as filtered by (GET /v1/audit?action=...).
TOKEN_CREATE = "token.create"  # noqa: S105 - an action's name
TOKEN_REVOKE = "token.revoke"  # noqa: S105 - an action's name
TOKEN_ROTATE = "token.rotate"  # noqa: S105 - an action's name
TOKEN_EXCHANGE = "token.exchange"  # noqa: S105 - an action's name
OIDC_VERIFY = "oidc.verify"
"""An OIDC ID token checked: target the claims naming the job, result ``ok`` or why not."""
REGISTRATION_CREATE = "registration.create"
REGISTRATION_DELETE = "registration.delete"
PRESENT = "present"
CLEANUP = "cleanup"
CERTIFICATE_ORDER = "certificate.order"
CERTIFICATE_ISSUED = "certificate.issued"
CERTIFICATE_FAILED = "certificate.failed"
CERTIFICATE_RENEWED = "certificate.renewed"
CERTIFICATE_RENEWAL_FAILED = "certificate.renewal-failed"
PERSIST_GRANT = "persist.grant"
PERSIST_CHANGE = "persist.change"
PERSIST_REVOKE = "persist.revoke"
PERSIST_EXPIRE = "persist.expire"
ACCESS = "access"
"""A refused request (401/403) to a route that is not otherwise audited."""
OK = "ok"
_TOKEN_SECRET = re.compile(TOKEN_PREFIX + r"([0-9a-f]{16})_[A-Za-z0-9_-]+")
"""A token's secret part; its key (before it) only finds the record and stays."""


def clean(text: str | None) -> str:
    """A field as stored: printable, bounded, ``-`` when empty, and without anything
    shaped like a token (a client may paste one where a name goes)."""
    if not text:
        return UNKNOWN
    if TOKEN_PREFIX in text:
        text = _TOKEN_SECRET.sub(TOKEN_PREFIX + r"\1_[redacted]", text)
    if text.isprintable():
        return text[:MAX_FIELD]
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[:MAX_FIELD])
    return printable or UNKNOWN


def event(
    face: str,
    action: str,
    target: str | None,
    *,
    actor: str | None,
    source: object = None,
    result: str = OK,
    at: float | None = None,
) -> AuditEventRecord:
    return AuditEventRecord(
        at=time.time() if at is None else at,
        actor=clean(actor),
        source=clean(None if source is None else str(source)),
        face=face,
        action=action,
        target=clean(target),
        result=clean(result),
    )


class AuditLog:
    """Queues events and writes them in batches from one task (``start`` / ``close``)."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        batch_size: int = BATCH_SIZE,
        queue_size: int = QUEUE_SIZE,
        retention: float = 90 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention = retention
        self._metrics = metrics
        self._interval = flush_interval
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._clock = clock
        self._queue: deque[AuditEventRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropped_since_warning = 0
        self._failing = False
        self._writing = asyncio.Lock()  # one batch at a time: a batch leaves once written

    def record(
        self,
        face: str,
        action: str,
        target: str | None,
        *,
        actor: str | None,
        source: object = None,
        result: str = OK,
        at: float | None = None,
    ) -> None:
        """Queue one event (never blocks, never raises); ``at`` defaults to now."""
        when = self._clock() if at is None else at
        self.add(event(face, action, target, actor=actor, source=source, result=result, at=when))

    def add(self, record: AuditEventRecord) -> None:
        if len(self._queue) >= self._queue_size:
            self._dropped_since_warning += 1
            if self._metrics is not None:
                self._metrics.audit_dropped.inc()
            return
        self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Stop the writer and write what is queued (as far as the store takes it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.drain()

    async def drain(self) -> None:
        """Write every queued event now (while the store takes them)."""
        while self._queue and await self.flush():
            pass

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            while await self.flush() and len(self._queue) >= self._batch_size:
                pass

    async def flush(self) -> bool:
        """Write up to one batch; False when there was nothing or the store refused it
        (the events stay queued for the next try)."""
        self._warn_dropped()
        async with self._writing:
            if not self._queue:
                return False
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                await self._store.add_audit_events(batch)
            except BrokerError as exc:
                if not self._failing:
                    log.warning(
                        "audit events not written yet (%d queued): %s", len(self._queue), exc
                    )
                self._failing = True
                return False
            if self._failing:
                log.info("audit events written again")
                self._failing = False
            for _ in batch:
                self._queue.popleft()
            return True

    async def purge(self) -> int:
        """Delete events older than the retention (a leader duty); return how many."""
        purged = await self._store.purge_audit(self._clock() - self._retention)
        if purged:
            log.info("purged %d audit event(s) older than the retention", purged)
        return purged

    def _warn_dropped(self) -> None:
        if self._dropped_since_warning:
            log.warning(
                "%d audit event(s) dropped: the queue of %d was full (is the store slow?)",
                self._dropped_since_warning, self._queue_size,
            )  # fmt: skip
            self._dropped_since_warning = 0
