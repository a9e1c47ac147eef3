"""Propagation as the faces see it: wait for a presented record, keep each record's last
report (for GET /v1/challenges/{id}), check any name, and count it all in metrics.

Reports are kept in the store, so every replica shows the same one: the first and the
last of a wait always, those between at most once a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable

from broker.errors import StoreUnavailableError
from broker.metrics import Metrics
from broker.propagation import PropagationChecker, PropagationReport
from broker.store import ChallengeRecord, Store

log = logging.getLogger(__name__)

REPORT_EVERY = 1.0
"""Seconds between the reports of a wait that are written to the store."""


class PropagationWatch:
    def __init__(self, checker: PropagationChecker, metrics: Metrics, store: Store) -> None:
        self.checker = checker
        self._metrics = metrics
        self._store = store

    async def wait(
        self,
        record: ChallengeRecord,
        deadline: float | None,
        on_update: Callable[[PropagationReport], None] | None = None,
    ) -> PropagationReport:
        """Wait (at most ``deadline`` seconds; None: the configured default) until every
        authoritative server of the record's name serves its value. The name asked for is
        checked, so a CNAME delegation is followed and checked too."""
        name = record.delegated_from or record.fqdn
        writes: set[asyncio.Task[None]] = set()
        last_write = -math.inf

        def remember(report: PropagationReport) -> None:
            nonlocal last_write
            if on_update is not None:
                on_update(report)
            if time.monotonic() - last_write >= REPORT_EVERY:
                last_write = time.monotonic()
                write = asyncio.ensure_future(self._keep(record.id, report))
                writes.add(write)
                write.add_done_callback(writes.discard)

        try:
            report = await self.checker.wait(
                name, record.value, timeout=deadline, on_update=remember
            )
        finally:
            # the last report must be the one that stays: earlier writes finish first
            await asyncio.gather(*writes, return_exceptions=True)
        await self._keep(record.id, report)
        self._count(report)
        return report

    async def check(self, fqdn: str, value: str) -> PropagationReport:
        report = await self.checker.check(fqdn, value)
        self._count(report)
        return report

    async def latest(self, challenge_id: str) -> PropagationReport | None:
        stored = await self._store.report(challenge_id)
        return None if stored is None else PropagationReport.from_json(json.loads(stored))

    async def _keep(self, challenge_id: str, report: PropagationReport) -> None:
        """Store the report; a store that fails here costs the report, not the wait."""
        text = json.dumps(report.to_json(), separators=(",", ":"))
        try:
            await self._store.put_report(challenge_id, text, time.time())
        except StoreUnavailableError as exc:
            log.warning("cannot keep the propagation report of %s: %s", challenge_id, exc)

    def _count(self, report: PropagationReport) -> None:
        if report.ready:
            outcome = "ready"
            self._metrics.propagation_seconds.observe(report.elapsed)
        elif report.error is not None and report.error.startswith("deadline passed"):
            outcome = "timeout"
        elif report.error is not None:
            outcome = "error"
        else:
            outcome = "not_ready"
        self._metrics.propagation_checks.labels(outcome).inc()
