"""A DNS worker's zones mirror the broker's from ``nodes`` messages
(broker.dnsserver.channel): same records, same SOA serial, whatever changed."""

from __future__ import annotations

import json

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from broker.dnsserver.channel import apply_nodes, nodes_message
from providers.embedded import EmbeddedZone, EmbeddedZoneSettings

ZONE = "example.test."
NAME = "_acme-challenge.www.example.test."


def zone() -> EmbeddedZone:
    return EmbeddedZone(EmbeddedZoneSettings(name=ZONE))


def content(z: EmbeddedZone) -> dict[str, list[str]]:
    """Every owner name's RRsets as text, and the SOA."""
    found = {}
    for key in [*z.owner_keys(), ZONE]:
        node = z.node(dns.name.from_text(key))
        found[key] = sorted(r.to_text() for r in node.rrsets.values()) if node else []
    found["exists"] = [str(z.exists(dns.name.from_text(k))) for k in z.owner_keys()]
    return found


def mirror(source: EmbeddedZone, target: EmbeddedZone, keys: list[str]) -> None:
    message = json.loads(json.dumps(nodes_message(source, keys)))  # as sent over the pipe
    apply_nodes({ZONE: target}, message)


def test_a_mirror_started_from_a_snapshot_and_kept_by_changes_answers_like_its_source() -> None:
    source, worker = zone(), zone()
    source.add_txt(NAME, "one", 60)
    source.reserve("reg.auth.example.test.")
    mirror(source, worker, source.owner_keys())
    assert content(worker) == content(source)
    assert worker.serial == source.serial

    cname = dns.rrset.from_text("_acme-challenge.app.example.test.", 300, "IN", "CNAME", "x.y.")
    source.add_static(cname)
    source.add_txt(NAME, "two", 60)
    source.remove_txt(NAME, "one")
    source.release("reg.auth.example.test.")
    changed = [NAME, "reg.auth.example.test.", "_acme-challenge.app.example.test."]
    mirror(source, worker, changed)
    assert content(worker) == content(source)
    assert worker.soa().to_text() == source.soa().to_text()

    source.remove_txt(NAME, "two")
    source.remove_static("_acme-challenge.app.example.test.", dns.rdatatype.CNAME)
    mirror(source, worker, changed)
    mirror(source, worker, changed)  # a message applied twice does no harm
    assert content(worker) == content(source)
    assert worker.node(dns.name.from_text(NAME)) is None
    assert not worker.exists(dns.name.from_text("www.example.test."))
    assert worker.serial == source.serial
