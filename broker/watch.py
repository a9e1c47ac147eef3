"""Propagation as the faces see it: wait for a presented record, keep each record's last
report (for GET /v1/challenges/{id}), check any name, and count it all in metrics.

The reports live in this process's memory, bounded; a replica that did not run the
wait has none to show.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from broker.metrics import Metrics
from broker.propagation import PropagationChecker, PropagationReport
from broker.store import ChallengeRecord

MAX_REPORTS = 10000


class PropagationWatch:
    def __init__(self, checker: PropagationChecker, metrics: Metrics) -> None:
        self.checker = checker
        self._metrics = metrics
        self._reports: OrderedDict[str, PropagationReport] = OrderedDict()

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

        def remember(report: PropagationReport) -> None:
            self._remember(record.id, report)
            if on_update is not None:
                on_update(report)

        report = await self.checker.wait(name, record.value, timeout=deadline, on_update=remember)
        self._remember(record.id, report)
        self._count(report)
        return report

    async def check(self, fqdn: str, value: str) -> PropagationReport:
        report = await self.checker.check(fqdn, value)
        self._count(report)
        return report

    def latest(self, challenge_id: str) -> PropagationReport | None:
        return self._reports.get(challenge_id)

    def _remember(self, challenge_id: str, report: PropagationReport) -> None:
        self._reports[challenge_id] = report
        self._reports.move_to_end(challenge_id)
        while len(self._reports) > MAX_REPORTS:
            self._reports.popitem(last=False)

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
