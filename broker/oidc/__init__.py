"""OIDC workload identity: CI jobs and workloads authenticate with their issuers' ID
tokens (settings, the issuers' keys, verification and rules)."""
