"""Real peers run on loopback for tests: pebble (an RFC 8555 test CA), PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from broker.store.schema import upgrade_postgresql
from tests.support import require_binary


def free_port() -> int:
    return free_ports(1)[0]


HANDED_OUT: set[int] = set()
"""Ports this test process already chose: never handed out twice, so two servers
started one after the other cannot be given the same port."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    chosen: list[int] = []
    for _ in range(count * 50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise AssertionError("no free port")


def free_dns_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            if port in HANDED_OUT:
                continue
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                HANDED_OUT.add(port)
                return int(port)
    raise AssertionError("no free port")


async def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; fail with its output when it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {process.returncode}:\n{text}")
    return text


async def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for localhost / 127.0.0.1 it signed."""
    openssl = require_binary("openssl")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    await run(
        openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=dns01-broker test CA", cwd=directory,
    )  # fmt: skip
    await run(
        openssl, "req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    await run(
        openssl, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "san.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


@dataclass
class Pebble:
    """Debian's pebble, validating DNS-01 against ``dns_server``."""

    directory: Path
    dns_server: tuple[str, int]
    eab_keys: dict[str, str] | None = None
    nonce_reject_percent: int = 0
    always_valid: bool = False
    """Skip validation (PEBBLE_VA_ALWAYS_VALID): for values in a zone no DNS server here serves."""
    process: asyncio.subprocess.Process | None = None
    ca_file: Path | None = None
    port: int = 0
    management_port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    async def start(self) -> None:
        pebble = require_binary("pebble")
        self.ca_file, cert, key = await make_tls_files(self.directory)
        self.port, self.management_port, http_port, tls_port = free_ports(4)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": self.eab_keys is not None,
                **({"externalAccountMACKeys": self.eab_keys} if self.eab_keys else {}),
            }
        }
        config_file = self.directory / "pebble.json"
        config_file.write_text(json.dumps(config))
        host, dns_port = self.dns_server
        self.log = (self.directory / "pebble.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            pebble, "-config", str(config_file), "-dnsserver", f"{host}:{dns_port}",
            stdout=self.log, stderr=asyncio.subprocess.STDOUT,
            env={
                **os.environ,
                "PEBBLE_VA_NOSLEEP": "1",
                "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject_percent),
                "PEBBLE_AUTHZREUSE": "0",
                **({"PEBBLE_VA_ALWAYS_VALID": "1"} if self.always_valid else {}),
            },
        )  # fmt: skip
        await self._wait_ready()

    def ssl_context(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        return ssl.create_default_context(cafile=str(self.ca_file))

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError("pebble exited:\n" + self.output())
                try:
                    async with session.get(self.url, ssl=self.ssl_context()) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("pebble did not start:\n" + self.output())

    async def root(self) -> Path:
        """The root that issues this run's certificates (regenerated at every start)."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=self.ssl_context()) as response,
        ):
            pem = await response.text()
        path = self.directory / "root.pem"
        path.write_text(pem)
        return path

    def output(self) -> str:
        path = self.directory / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if hasattr(self, "log"):
            self.log.close()


async def verify_chain(pebble: Pebble, certificate: Path, issuer: Path, names: set[str]) -> None:
    openssl = require_binary("openssl")
    root = await pebble.root()
    verdict = await run(
        openssl, "verify", "-CAfile", str(root), "-untrusted", str(issuer), str(certificate)
    )
    assert verdict.strip().endswith(": OK"), verdict
    text = await run(openssl, "x509", "-in", str(certificate), "-noout", "-ext", "subjectAltName")
    sans = {part.strip().removeprefix("DNS:") for part in text.splitlines()[1].split(",")}
    assert sans == names


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else require_binary(name)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port (run as the postgres user when
    the tests run as root, since PostgreSQL refuses root)."""

    port: int = 0
    directory: Path | None = None

    def _as_owner(self, *argv: str) -> tuple[str, ...]:
        return ("runuser", "-u", "postgres", "--", *argv) if os.geteuid() == 0 else argv

    async def start(self) -> None:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        self.directory = Path(tempfile.mkdtemp(prefix="dns01-broker-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        self.port = free_port()
        await run(*self._as_owner(initdb, "-D", str(data), "-U", "postgres", "--auth=trust"))
        await run(
            *self._as_owner(
                pg_ctl, "-D", str(data), "-l", str(self.directory / "log"), "-w", "start",
                "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            )
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def stop(self) -> None:
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            await run(
                *self._as_owner(
                    _postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"
                )
            )
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


TEMPLATE_DATABASE = "broker_template"


class PostgresCluster:
    """A session's PostgreSQL: a database per test, copied from a migrated template."""

    def __init__(self, server: Postgres) -> None:
        self.server = server
        self._made = 0

    @classmethod
    def start(cls) -> PostgresCluster:
        server = Postgres()
        _in_thread(server.start())
        cluster = cls(server)
        try:
            cluster._admin(f"CREATE DATABASE {TEMPLATE_DATABASE}")
            upgrade_postgresql(server.url(TEMPLATE_DATABASE), None)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def new_database(self) -> str:
        self._made += 1
        name = f"test_{os.getpid()}_{self._made}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
        return self.server.url(name)

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def stop(self) -> None:
        _in_thread(self.server.stop())


def _in_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to its end on a loop of its own (callers may be inside one)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()
