from broker.store.base import (
    ChallengeRecord,
    ChallengeState,
    RegistrationRecord,
    Store,
    TokenRecord,
)

__all__ = ["ChallengeRecord", "ChallengeState", "RegistrationRecord", "Store", "TokenRecord"]
