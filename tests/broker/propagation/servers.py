"""Real DNS servers on loopback for the propagation tests: knotd (authoritative, dynamic
update from loopback, per-type query counters from mod-stats) and named (a recursive
resolver forwarding test zones to knot)."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.update

from tests.peers import HANDED_OUT

START_TIMEOUT = 15.0
Address = tuple[str, int]


def hostport(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(hosts: Sequence[str]) -> int:
    """A port free for UDP and TCP on every one of ``hosts`` right now."""
    for _ in range(200):
        family = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if port not in HANDED_OUT and all(_bindable(host, port) for host in hosts):
            HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def loopback_addresses(count: int) -> list[str]:
    """Distinct random IPv4 loopback addresses (Linux routes all of 127/8 to lo)."""
    chosen: set[str] = set()
    while len(chosen) < count:
        chosen.add(
            f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        )
    return sorted(chosen)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def zone_file(origin: str, nameservers: Mapping[str, Iterable[str]], *records: str) -> str:
    """A zone with SOA (negative TTL 30 s), the given NS names (relative to ``origin``)
    and their addresses, then ``records`` (zone file lines)."""
    lines = [f"$ORIGIN {origin}", "$TTL 300", "@ SOA ns1 hostmaster 1 3600 600 604800 30"]
    for name, addresses in nameservers.items():
        lines.append(f"@ NS {name}")
        for address in addresses:
            lines.append(f"{name} {'AAAA' if ':' in address else 'A'} {address}")
    lines.extend(records)
    return "\n".join(lines) + "\n"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_answering(
    process: subprocess.Popen[bytes], query: dns.message.Message, where: Address, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()}")
        with suppress(dns.exception.DNSException, OSError):
            response = dns.query.udp(query, where[0], port=where[1], timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"no answer on {hostport(where)} within {START_TIMEOUT} s:\n{log.read_text()}"
    )


KNOT_CONF = """server:
    listen: [{listen}]
    rundir: {dir}/run
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {dir}/db
log:
  - target: stderr
    any: warning
acl:
  - id: loopback-update
    address: [127.0.0.0/8, ::1]
    action: update
mod-stats:
  - id: counts
    request-protocol: on
    query-type: on
template:
  - id: default
    storage: {dir}
    file: "%s.zone"
    acl: loopback-update
    zonefile-sync: -1
    global-module: mod-stats/counts
zone:
{zones}
"""


class Knot:
    """One knotd serving ``zones`` (origin -> zone file text) on every ``listen`` address."""

    def __init__(
        self, binary: str, directory: Path, listen: Sequence[Address], zones: Mapping[str, str]
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.listen = list(listen)
        self.zones = dict(zones)
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = directory / "knot.conf"

    @property
    def address(self) -> Address:
        return self.listen[0]

    @property
    def servers(self) -> list[str]:
        return [hostport(address) for address in self.listen]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        for sub in ("run", "db"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        for origin, text in self.zones.items():
            (self.directory / f"{origin.rstrip('.')}.zone").write_text(text)
        listen = ", ".join(f"{host}@{port}" for host, port in self.listen)
        zones = "\n".join(f"  - domain: {origin}" for origin in self.zones)
        self.conf.write_text(KNOT_CONF.format(listen=listen, dir=self.directory, zones=zones))
        log = self.directory / "knot.log"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=output, stderr=subprocess.STDOUT
            )
        try:
            for origin in self.zones:
                for address in self.listen:
                    _wait_answering(
                        self.process, dns.message.make_query(origin, "SOA"), address, log
                    )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    async def update(
        self,
        zone: str,
        *,
        add: Sequence[tuple[str, str, str]] = (),
        delete: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Dynamic update (RFC 2136, unsigned, over TCP) of (name, type, text) records."""
        message = dns.update.UpdateMessage(zone)
        for name, rdtype, text in delete:
            message.delete(name, rdtype, text)
        for name, rdtype, text in add:
            message.add(name, 60, rdtype, text)
        host, port = self.address
        response = await dns.asyncquery.tcp(message, host, port=port, timeout=5.0)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"update refused: {dns.rcode.to_text(response.rcode())}")

    async def add_txt(self, zone: str, name: str, *values: str) -> None:
        await self.update(zone, add=[(name, "TXT", _quoted(value)) for value in values])

    def stats(self) -> dict[str, int]:
        """knot's mod-stats counters, e.g. ``query-type[TXT]``, ``request-protocol[tcp4]``."""
        result = subprocess.run(
            ["knotc", "-c", str(self.conf), "stats"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        counters = {}
        for line in result.stdout.splitlines():
            match = re.fullmatch(r"mod-stats\.(\S+) = (\d+)", line.strip())
            if match:
                counters[match.group(1)] = int(match.group(2))
        return counters

    def txt_queries(self) -> int:
        return self.stats().get("query-type[TXT]", 0)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


NAMED_CONF = """options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ {host}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ any; }};
    allow-recursion {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
{zones}
"""


class Named:
    """A recursive resolver (BIND) forwarding each test zone to its servers."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        listen: Address,
        forwards: Mapping[str, Sequence[Address]],
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.listen = listen
        self.forwards = dict(forwards)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return hostport(self.listen)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        zones = "\n".join(
            f'zone "{zone.rstrip(".")}" {{ type forward; forward only; forwarders {{ '
            + " ".join(f"{host} port {port};" for host, port in servers)
            + " }; };"
            for zone, servers in self.forwards.items()
        )
        host, port = self.listen
        conf = self.directory / "named.conf"
        conf.write_text(NAMED_CONF.format(dir=self.directory, host=host, port=port, zones=zones))
        log = self.directory / "named.log"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [self.binary, "-g", "-n", "1", "-c", str(conf)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        query = dns.message.make_query("version.bind", "TXT", dns.rdataclass.CH)
        try:
            _wait_answering(self.process, query, self.listen, log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


async def start_in_thread(server: Knot | Named) -> None:
    await asyncio.to_thread(server.start)
