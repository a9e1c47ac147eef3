from broker.store.base import ChallengeRecord, ChallengeState, Store, TokenRecord

__all__ = ["ChallengeRecord", "ChallengeState", "Store", "TokenRecord"]
