"""Finishes provider changes a crash left unfinished, expires leases, purges old history
and resumes orders nobody runs: on one replica at a time (the leader), on a fixed
interval, for as long as it runs (its first pass as soon as it leads).

Every replica asks for the leadership each second, so when the leader dies another
takes over within about a second of the store noticing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from broker.errors import BrokerError
from broker.metrics import Metrics
from broker.service import ChallengeService
from broker.store.changes import Leadership

log = logging.getLogger(__name__)

LEADERSHIP_POLL = 1.0
Duty = Callable[[], Awaitable[object]]


class Reconciler:
    def __init__(
        self,
        service: ChallengeService,
        interval: float,
        leadership: Leadership,
        metrics: Metrics,
        duties: Sequence[Duty] = (),
    ) -> None:
        self.service = service
        self.interval = interval
        self.leading = False
        self._leadership = leadership
        self._metrics = metrics
        self._duties = duties

    async def run_once(self) -> int:
        await self.service.finish()
        expired = await self.service.expire_due()
        await self.service.purge_history()
        for duty in self._duties:
            await duty()
        self._metrics.live_records.set(await self.service.store.count_live())
        return expired

    async def run(self) -> None:
        next_pass = 0.0
        try:
            while True:
                await self._lead()
                if self.leading and time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + self.interval
                    try:
                        await self.run_once()
                    except BrokerError as exc:
                        log.warning(
                            "reconcile pass failed, retrying in %.0fs: %s", self.interval, exc
                        )
                await asyncio.sleep(min(self.interval, LEADERSHIP_POLL))
        finally:
            await self._leadership.release()

    async def _lead(self) -> None:
        leading = await self._leadership.try_acquire()
        if leading != self.leading:
            self.leading = leading
            self._metrics.leader.set(int(leading))
            if leading:
                log.info("this replica now leads: it expires leases and resumes orders")
            else:
                log.warning("this replica no longer leads")
