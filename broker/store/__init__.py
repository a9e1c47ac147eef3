from broker.store.base import (
    AcmeAccountRecord,
    CertificateOrderRecord,
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
    "ChallengeRecord",
    "ChallengeState",
    "OrderState",
    "RegistrationRecord",
    "Store",
    "TokenRecord",
]
