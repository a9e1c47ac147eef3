"""Propagation: when does every authoritative nameserver of a name serve a TXT value?"""

from broker.propagation.checker import PropagationChecker
from broker.propagation.report import PropagationReport, ResolverState, ServerState
from broker.propagation.settings import PropagationSettings, parse_server

__all__ = [
    "PropagationChecker",
    "PropagationReport",
    "PropagationSettings",
    "ResolverState",
    "ServerState",
    "parse_server",
]
