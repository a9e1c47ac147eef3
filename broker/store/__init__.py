from broker.store.base import (
    AcmeAccountRecord,
    CertificateOrderRecord,
    ChallengeIntent,
    ChallengeRecord,
    ChallengeState,
    OrderState,
    RegistrationRecord,
    Store,
    TokenRecord,
)

__all__ = [
    "AcmeAccountRecord",
    "CertificateOrderRecord",
    "ChallengeIntent",
    "ChallengeRecord",
    "ChallengeState",
    "OrderState",
    "RegistrationRecord",
    "Store",
    "TokenRecord",
]
