"""How hard the fuzz tests try: hypothesis settings profiles, picked by an env variable.

``DNS01_BROKER_FUZZ=ci`` (the default) runs a fixed number of derandomized examples per
test, so ``make test`` spends a bounded, repeatable time (well under a minute for all of
tests/fuzz); ``DNS01_BROKER_FUZZ=long`` runs 50 times as many, randomized, and keeps
failing examples in .hypothesis/ to replay them first next time. The profiles are applied
per test (``@FUZZ``), not loaded globally, so they never change schemathesis' settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "DNS01_BROKER_FUZZ"
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "dns01-ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "dns01-long",
    max_examples=15000,
    deadline=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)


def fuzz_settings(name: str | None = None) -> settings:
    name = name or os.environ.get(PROFILE_ENV, "ci")
    if name not in ("ci", "long"):
        raise ValueError(f"{PROFILE_ENV}={name!r}: use 'ci' or 'long'")
    return settings.get_profile(f"dns01-{name}")


FUZZ = fuzz_settings()
