"""What every provider's settings share: strict models, zones as absolute names, and for
cloud APIs the same timeout, retry and polling knobs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.dnsname import normalize_name
from broker.values import Duration
from providers.faults import FaultSettings
from providers.resilience import RetrySettings


class ProviderSettingsModel(BaseModel):
    """Errors never echo the input (it may be a secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    zones: list[str] = Field(default_factory=list)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    faults: FaultSettings | None = None

    @field_validator("zones")
    @classmethod
    def _zones(cls, zones: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_name(zone, what="zone name") for zone in zones))

    def zone_names(self) -> tuple[str, ...]:
        return tuple(self.zones)


class CloudApiSettings(ProviderSettingsModel):
    private_zones: bool = True
    timeout: Duration = Field(10.0, le=300)
    """Timeout of each API call."""
    max_attempts: int = Field(6, ge=1, le=20)
    """Tries of a call the API throttled (or, for Cloud DNS, a conflicting change)."""
    backoff: Duration = Field(0.5, le=60)
    """First pause after throttling; doubled per retry (with jitter), at most 20 s."""
    poll_interval: Duration = Field(5.0, le=300)
    apply_timeout: Duration = 300.0
    """How long wait_applied waits for the change to be live."""
