"""The seed corpus of the DNS fuzz tests: one packet per file in tests/fuzz/corpus/.

Each seed is a message the server must handle, from the common query to a signed UPDATE;
the fuzz tests replay every seed as it is and mutate them. ``python -m tests.fuzz.corpus``
writes the seeds made here (a packet that broke the server once belongs here too: save it
as ``corpus/<what>.bin`` by hand, and it is replayed from then on).
"""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.tsig
import dns.update

CORPUS = Path(__file__).parent / "corpus"
ZONE = "example.test."
CHALLENGE = "_acme-challenge.www.example.test."
KEY = dns.tsig.Key("fuzz-key.", "ZnV6ei1mdXp6LWZ1enotZnV6ei1mdXp6LWZ1eno=", "hmac-sha256")
OTHER_KEY = dns.tsig.Key("fuzz-key.", "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI=", "hmac-sha256")
UNKNOWN_KEY = dns.tsig.Key("nobody.", "bm9ib2R5LW5vYm9keS1ub2JvZHktbm9ib2R5LW5v", "hmac-sha256")


def _query(name: str, rdtype: str, **kwargs: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kwargs).to_wire()  # type: ignore[arg-type]


def _update(key: dns.tsig.Key | None, *, delete: bool = False) -> bytes:
    update = dns.update.UpdateMessage(ZONE)
    if delete:
        update.delete(CHALLENGE, "TXT", "seed-value")
    else:
        update.add(CHALLENGE, 60, "TXT", "seed-value")
    if key is not None:
        update.use_tsig(key)
    return update.to_wire()


def _signed_query(key: dns.tsig.Key) -> bytes:
    query = dns.message.make_query(CHALLENGE, "TXT", use_edns=0)
    query.use_tsig(key)
    return query.to_wire()


def _with(packet: bytes, offset: int, replacement: bytes) -> bytes:
    return packet[:offset] + replacement + packet[offset + len(replacement) :]


def seeds() -> dict[str, bytes]:
    plain = _query(CHALLENGE, "TXT")
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"clientck")
    two_questions = dns.message.make_query(ZONE, "SOA")
    two_questions.question.append(two_questions.question[0])
    notify = dns.message.make_query(ZONE, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57]) + "."
    return {
        "query-txt": plain,
        "query-txt-edns": _query(CHALLENGE, "TXT", use_edns=0, payload=4096),
        "query-txt-edns-small-payload": _query(CHALLENGE, "TXT", use_edns=0, payload=100),
        "query-soa-edns-cookie": _query(ZONE, "SOA", use_edns=0, options=[cookie]),
        "query-edns-version-1": _query(ZONE, "SOA", use_edns=1),
        "query-any": _query(CHALLENGE, "ANY"),
        "query-axfr": _query(ZONE, "AXFR"),
        "query-outside-zones": _query("www.example.com.", "A"),
        "query-chaos": _query("version.bind.", "TXT", rdclass=dns.rdataclass.CH),
        "query-nxdomain": _query("nothing.example.test.", "A"),
        "query-longest-name": _query(long_name, "TXT"),
        "query-mixed-case": _query("_ACME-Challenge.WWW.Example.Test.", "TXT"),
        "query-two-questions": two_questions.to_wire(),
        "query-compressed-question": plain[:12] + b"\x03www\xc0\x10" + plain[-4:],
        "query-pointer-loop": plain[:12] + b"\xc0\x0c\x00\x10\x00\x01",
        "query-qr-set": _with(plain, 2, b"\x80"),
        "query-notify": notify.to_wire(),
        "header-only": plain[:12],
        "runt": plain[:5],
        "update-signed": _update(KEY),
        "update-signed-delete": _update(KEY, delete=True),
        "update-unsigned": _update(None),
        "update-wrong-secret": _update(OTHER_KEY),
        "update-unknown-key": _update(UNKNOWN_KEY),
        "query-signed": _signed_query(KEY),
        "query-signed-unknown-key": _signed_query(UNKNOWN_KEY),
    }


def load() -> dict[str, bytes]:
    """Every seed in the corpus directory, by file name."""
    return {path.stem: path.read_bytes() for path in sorted(CORPUS.glob("*.bin"))}


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, packet in seeds().items():
        (CORPUS / f"{name}.bin").write_bytes(packet)


if __name__ == "__main__":
    main()
