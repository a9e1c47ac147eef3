"""TLS for the HTTP API, with the certificate reloaded when its files change.

Certificates are short-lived (cert-manager, the broker's own ``issue``) and a restart
to pick up a renewed one drops every waiting client. The listening context therefore
has an SNI callback, which OpenSSL calls at every handshake (with or without SNI): it
compares the files' (mtime, size, inode) with those last loaded and, when they differ,
loads the new pair into a fresh context that the handshake and later ones use. A pair
that does not load (a half-written renewal, a key that does not match) is logged once
and the last good one kept; it is tried again when the files change again. A stat per
handshake is far cheaper than the handshake itself, and there is no poller to own.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int], ...]


class TlsConfigError(Exception):
    """The configured certificate or key cannot be loaded at start."""


class ReloadingTls:
    """The server-side SSLContext for ``cert_file``/``key_file``, kept current."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._signature = self._stat()
        try:
            self._current = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load http.tls_cert_file {cert_file} with http.tls_key_file "
                f"{key_file}: {exc}; give a PEM certificate chain and its private key"
            ) from None
        self.context = self._new_context()
        self.context.load_cert_chain(cert_file, key_file)
        self.context.sni_callback = self._on_hello

    def _stat(self) -> Signature:
        try:
            stats = (os.stat(self.cert_file), os.stat(self.key_file))
        except OSError:
            return ()
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _load(self) -> ssl.SSLContext:
        context = self._new_context()
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def current(self) -> ssl.SSLContext:
        """The context for the files as they are now (reloaded if they changed)."""
        signature = self._stat()
        if signature and signature != self._signature:
            self._signature = signature
            try:
                self._current = self._load()
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "TLS certificate %s or key %s changed but does not load (%s); "
                    "still serving the previous one",
                    self.cert_file,
                    self.key_file,
                    exc,
                )
            else:
                log.info("TLS certificate reloaded from %s", self.cert_file)
        return self._current

    def _on_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self.current()
