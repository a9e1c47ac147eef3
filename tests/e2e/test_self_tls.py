"""The API served over TLS with a certificate the broker's own ACME client issued and
renews (`dns01-broker issue` / `renew` into the files `http.tls_cert_file` and
`http.tls_key_file` name): a renewal reaches new connections without a restart."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from tests.e2e.world import World
from tests.process import Served, start
from tests.support import write_config

pytestmark = pytest.mark.timeout(240)
NAME = "api.example.test"


async def served_serial(url: str, root: Path) -> int:
    """The serial of the certificate a new TLS connection to ``url`` is shown, verified
    against pebble's root for ``NAME``; the API answers on that connection."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(root))
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port, ssl=context, server_hostname=NAME
    )
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: " + NAME.encode() + b"\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def test_the_api_serves_and_reloads_a_certificate_it_issued_for_itself(
    world: World, tmp_path: Path, serve: list[Served]
):
    live = tmp_path / "live"
    code, _, stderr = await world.cli(*world.issue_args(live, NAME))
    assert code == 0, stderr
    state = tmp_path / "tls-broker"
    state.mkdir()
    config = write_config(state, "", state="var")
    files = f'tls_cert_file = "{live}/fullchain.pem"\ntls_key_file = "{live}/privkey.pem"\n'
    config.write_text(config.read_text().replace("[http]\n", "[http]\n" + files, 1))
    served = await start(config, serve)
    assert served.http.startswith("https://")
    root = await world.pebble.root()
    first = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes()).serial_number
    assert await served_serial(served.http, root) == first
    code, _, stderr = await world.cli("renew", "--out", str(live), "--force")
    assert code == 0, stderr
    second = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes()).serial_number
    assert second != first
    assert await served_serial(served.http, root) == second
