from broker.store.base import (
    AcmeAccountRecord,
    AuditEventRecord,
    AuditQuery,
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
    "AuditEventRecord",
    "AuditQuery",
    "CertificateOrderRecord",
    "ChallengeIntent",
    "ChallengeRecord",
    "ChallengeState",
    "OrderState",
    "RegistrationRecord",
    "Store",
    "TokenRecord",
]
