"""Authoritative DNS over UDP and TCP for the broker's embedded zones."""

from broker.dnsserver.server import DnsServer

__all__ = ["DnsServer"]
