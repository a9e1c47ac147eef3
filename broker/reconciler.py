"""Expires leases and purges old history, on a fixed interval, for as long as it runs."""

from __future__ import annotations

import asyncio
import logging

from broker.errors import BrokerError
from broker.service import ChallengeService

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, service: ChallengeService, interval: float) -> None:
        self.service = service
        self.interval = interval

    async def run_once(self) -> int:
        expired = await self.service.expire_due()
        await self.service.purge_history()
        return expired

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except BrokerError as exc:
                log.warning("reconcile pass failed, retrying in %.0fs: %s", self.interval, exc)
            await asyncio.sleep(self.interval)
