"""TLS on the HTTP API: served from http.tls_cert_file/tls_key_file, reloaded when the
files change, the last good pair kept when a new one does not load."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.cli.targets import broker_target
from broker.config import ConfigError, load_settings
from tests.conftest import StartBroker
from tests.process import EXE, Served, start
from tests.support import Running, write_config, write_settings


@pytest.fixture
def store_backend() -> str:
    """TLS never reaches the store: SQLite is enough."""
    return "sqlite"


def self_signed(common_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for 127.0.0.1, named ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def replace(path: Path, data: bytes) -> None:
    """Write as a renewal tool does: a new file moved over the old one."""
    staging = path.with_suffix(".new")
    staging.write_bytes(data)
    os.replace(staging, path)


def common_name(der: bytes) -> str:
    subject = x509.load_der_x509_certificate(der).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def served_name(url: str) -> str:
    """The common name of the certificate the server presents (not verified)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return common_name(der)


async def healthz_trusting(url: str, cert_pem: bytes) -> int:
    """GET /healthz with a client that trusts only ``cert_pem`` and checks the address."""
    context = ssl.create_default_context(cadata=cert_pem.decode())
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz", ssl=context) as r:
        return r.status


def tls_env(directory: Path) -> dict[str, str]:
    return {
        "DNS01_BROKER_HTTP__TLS_CERT_FILE": str(directory / "tls.crt"),
        "DNS01_BROKER_HTTP__TLS_KEY_FILE": str(directory / "tls.key"),
    }


async def test_the_served_certificate_follows_the_files_and_a_broken_pair_is_ignored(
    start_broker: StartBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, first_key = self_signed("first")
    (tmp_path / "tls.crt").write_bytes(first)
    (tmp_path / "tls.key").write_bytes(first_key)
    running: Running = await start_broker(write_settings(tmp_path, **tls_env(tmp_path)))
    assert running.url.startswith("https://127.0.0.1:")
    assert await served_name(running.url) == "first"
    assert await healthz_trusting(running.url, first) == 200

    second, second_key = self_signed("second")
    replace(tmp_path / "tls.crt", second)
    replace(tmp_path / "tls.key", second_key)
    assert await served_name(running.url) == "second"
    assert await healthz_trusting(running.url, second) == 200

    third, _ = self_signed("third")
    with caplog.at_level(logging.ERROR, logger="broker.api.tls"):
        replace(tmp_path / "tls.crt", third)
        assert await served_name(running.url) == "second"
        assert await served_name(running.url) == "second"
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1, (
        "a broken pair is logged once, not at every handshake"
    )
    assert "does not load" in caplog.records[0].getMessage()


async def test_plain_http_is_refused_on_a_tls_listener(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    cert, key = self_signed("only")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    running = await start_broker(write_settings(tmp_path, **tls_env(tmp_path)))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(running.url.replace("https://", "http://") + "/healthz")


def test_a_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    env = {"DNS01_BROKER_HTTP__TLS_CERT_FILE": str(tmp_path / "tls.crt")}
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path), env)
    assert caught.value.problems[0][0] == "http.tls_cert_file"


async def test_serve_refuses_to_start_on_files_that_do_not_load(
    tmp_path: Path, serve: list[Served]
) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate", encoding="utf-8")
    (tmp_path / "tls.key").write_text("not a key", encoding="utf-8")
    config = write_config(tmp_path)
    process = await asyncio.create_subprocess_exec(
        EXE,
        "--config",
        str(config),
        "serve",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **tls_env(tmp_path)},
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode != 0
    assert b"http.tls_cert_file" in err


async def test_serve_over_tls_answers_a_verifying_client(
    tmp_path: Path, serve: list[Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed("served")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    for name, value in tls_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    broker = await start(write_config(tmp_path), serve)
    assert broker.http.startswith("https://")
    assert await healthz_trusting(broker.http, cert) == 200
    assert await broker.stop() == 0


def test_the_cli_calls_a_local_tls_broker_on_https(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path), tls_env(tmp_path))
    (tmp_path / "admin.token").write_text("d01_token\n", encoding="utf-8")
    target = broker_target(argparse.Namespace(token=None, server=None), settings)
    assert target.url.startswith("https://127.0.0.1:")
