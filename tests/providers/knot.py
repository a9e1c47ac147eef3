"""Debian's knotd on a loopback port, accepting TSIG-signed dynamic updates: a fresh
database per start, the PID of knotd itself, its port awaited, stopped after."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

START_TIMEOUT = 15.0

KNOT_CONF = """server:
    listen: 127.0.0.1@{port}
    rundir: {dir}/run
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {dir}/db
log:
  - target: stderr
    any: info
key:
  - id: {key_name}
    algorithm: hmac-sha256
    secret: {secret}
  - id: {other_key_name}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: broker-update
    address: [127.0.0.0/8]
    key: {key_name}
    action: update
mod-stats:
  - id: counts
    server-operation: on
template:
  - id: default
    storage: {dir}
    file: "%s.zone"
    acl: broker-update
    zonefile-sync: -1
    global-module: mod-stats/counts
zone:
{zones}
"""


def zone_file(origin: str) -> str:
    """SOA with MNAME ns1.<origin>, which has the address 127.0.0.1."""
    return (
        f"$ORIGIN {origin}\n$TTL 300\n"
        "@ SOA ns1 hostmaster 1 3600 600 604800 30\n@ NS ns1\nns1 A 127.0.0.1\n"
    )


class TsigKnot:
    """knotd serving ``zones`` on 127.0.0.1:``port``; updates need key ``key_name``
    (``other_key_name`` is known to knot but allowed nothing)."""

    def __init__(
        self,
        binary: str,
        knotc: str,
        directory: Path,
        port: int,
        zones: list[str],
        *,
        key_name: str,
        other_key_name: str,
        secret: str,
    ) -> None:
        self.binary = binary
        self.knotc = knotc
        self.directory = directory
        self.port = port
        self.zones = zones
        self.key_name = key_name
        self.other_key_name = other_key_name
        self.secret = secret
        self.conf = directory / "knot.conf"
        self.log = directory / "knot.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for sub in ("run", "db"):
            (self.directory / sub).mkdir(parents=True)
        for origin in self.zones:
            (self.directory / f"{origin.rstrip('.')}.zone").write_text(zone_file(origin))
        self.conf.write_text(
            KNOT_CONF.format(
                port=self.port,
                dir=self.directory,
                key_name=self.key_name,
                other_key_name=self.other_key_name,
                secret=self.secret,
                zones="\n".join(f"  - domain: {origin}" for origin in self.zones),
            )
        )
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=output, stderr=subprocess.STDOUT
            )
        try:
            self._wait_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_answering(self) -> None:
        assert self.process is not None
        query = dns.message.make_query(self.zones[0], "SOA")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"knotd exited {self.process.returncode}:\n{self.log_text()}")
            with suppress(dns.exception.DNSException, OSError):
                response = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=0.5)
                if response.rcode() == dns.rcode.NOERROR:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"knotd did not answer within {START_TIMEOUT} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def updates_received(self) -> int:
        """knot's mod-stats count of UPDATE requests."""
        result = subprocess.run(
            [self.knotc, "-c", str(self.conf), "stats"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        for line in result.stdout.splitlines():
            match = re.fullmatch(r"mod-stats\.server-operation\[update\] = (\d+)", line.strip())
            if match:
                return int(match.group(1))
        return 0

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
