"""DNS backends behind one contract (providers.base), registered by config type."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from providers.base import DnsProvider
from providers.faults import FaultSettings
from providers.resilience import RetrySettings


class ProviderSettings(Protocol):
    """What the broker needs of every provider's validated settings section."""

    type: str
    retry: RetrySettings
    faults: FaultSettings | None

    def zone_names(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class ProviderType:
    module: str
    settings: str
    provider: str
    extra: str | None = None


PROVIDER_TYPES: dict[str, ProviderType] = {
    "embedded": ProviderType("providers.embedded", "EmbeddedSettings", "EmbeddedProvider"),
    "route53": ProviderType("providers.route53", "Route53Settings", "Route53Provider", "route53"),
    "google": ProviderType("providers.google", "GoogleSettings", "GoogleProvider", "google"),
    "rfc2136": ProviderType("providers.rfc2136", "Rfc2136Settings", "Rfc2136Provider"),
}


def load_provider_type(kind: str) -> tuple[type[BaseModel], type[DnsProvider]]:
    """The settings model and provider class of ``kind``; a missing extra names its pip command."""
    spec = PROVIDER_TYPES[kind]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        hint = f"pip install 'dns01-broker[{spec.extra}]'" if spec.extra else "reinstall"
        raise ImportError(f"provider type {kind!r} needs {exc.name}: run {hint}") from exc
    return getattr(module, spec.settings), getattr(module, spec.provider)
