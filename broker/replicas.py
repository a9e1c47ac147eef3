"""Keeps this replica's memory in step with what other replicas change in the store: the
TXT values its embedded zones serve and the acme-dns names they answer for.

Each change is applied by reading the present state back from the store, so a change
seen twice, late or out of order does no harm; after every (re)connection of the feed
everything is reloaded, and until then the replica reports itself not ready. Tokens
need nothing here: the authenticator's cache follows the store's token generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from broker.acmedns import AcmeDnsAccounts
from broker.metrics import Metrics
from broker.service import ChallengeService
from broker.store import ChallengeIntent
from broker.store.changes import (
    ChangeFeed,
    RegistrationChanged,
    Resync,
    StoreChange,
    TokenChanged,
    TxtChanged,
)
from providers.base import DnsProvider, ZoneNotFoundError
from providers.embedded import EmbeddedProvider

log = logging.getLogger(__name__)


class ReplicaSync:
    def __init__(
        self,
        service: ChallengeService,
        feed: ChangeFeed,
        providers: Mapping[str, DnsProvider],
        acmedns: AcmeDnsAccounts | None,
        metrics: Metrics,
        *,
        txt_ttl: int,
    ) -> None:
        self._service = service
        self._store = service.store
        self._feed = feed
        self._embedded = {
            name: provider.backend
            for name, provider in providers.items()
            if isinstance(provider.backend, EmbeddedProvider)
        }
        self._acmedns = acmedns
        self._metrics = metrics
        self._ttl = txt_ttl
        self._loaded = asyncio.Event()

    async def wait_loaded(self, seconds: float) -> bool:
        """Wait until the first reload is done (a replica starting serves nothing older
        than the store); False when it took longer than ``seconds``."""
        try:
            await asyncio.wait_for(self._loaded.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def readiness(self) -> dict[str, Any]:
        if self._feed.connected:
            return {"ok": True}
        return {"ok": False, "detail": f"not receiving other replicas' changes: {self._feed.error}"}

    async def run(self) -> None:
        await self._feed.run(self.apply)

    async def apply(self, change: StoreChange) -> None:
        if isinstance(change, Resync):
            await self._reload()
            self._loaded.set()
            kind = "resync"
        elif isinstance(change, TxtChanged):
            await self._reload_name(change.provider, change.fqdn)
            kind = "txt"
        elif isinstance(change, RegistrationChanged):
            if self._acmedns is not None:
                await self._acmedns.sync(change.username, change.subdomain)
            kind = "registration"
        else:
            assert isinstance(change, TokenChanged)
            kind = "token"
        self._metrics.store_changes.labels(kind).inc()

    async def _reload(self) -> None:
        if self._embedded:
            values: dict[str, dict[tuple[str, str], list[str]]] = {n: {} for n in self._embedded}
            async with self._service.writes.exclusive():
                for record in await self._store.live_challenges():
                    if record.provider in values and record.intent is not ChallengeIntent.REMOVE:
                        key = (record.zone, record.fqdn)
                        values[record.provider].setdefault(key, []).append(record.value)
                for name, provider in self._embedded.items():
                    provider.load_txt(values[name], self._ttl)
        if self._acmedns is not None:
            await self._acmedns.reload()
        log.info("reloaded the embedded zones and registrations from the store")

    async def _reload_name(self, provider_name: str, fqdn: str) -> None:
        provider = self._embedded.get(provider_name)
        if provider is None:
            return
        try:
            zone = await provider.find_zone(fqdn)
        except ZoneNotFoundError:
            return
        async with self._service.holding(provider_name, fqdn):
            live = [
                r.value
                for r in await self._store.live_at(fqdn)
                if r.provider == provider_name and r.intent is not ChallengeIntent.REMOVE
            ]
            provider.replace_txt(zone, fqdn, live, self._ttl)
