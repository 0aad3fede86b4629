"""TLS for the ingress: the certificates of the served Ingresses' `spec.tls[]` (Secrets of
type kubernetes.io/tls, keys `tls.crt` and `tls.key`, in the Ingress's namespace), chosen
per connection by SNI: the exact host, else the `*.wildcard` one covering it, else a
default certificate no client trusts (as ingress-nginx's "fake certificate"), made at start.

Python's ssl loads certificates from files only: each pair is written to a private
directory (0700) for the load and removed at once; a context is made once per distinct pair.
"""

from __future__ import annotations

import hashlib
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from k8semu import pki
from k8semu.log import get_logger

log = get_logger(__name__)

DEFAULT_NAME = "k8semu ingress default certificate"


def _context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context for one certificate (ValueError when the pair does not load)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="k8semu-ingress-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(cert_pem)
        key.touch(0o600)
        key.write_bytes(key_pem)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"not a certificate and key: {exc}") from None
    return ctx


def self_signed() -> tuple[bytes, bytes]:
    """A fresh certificate no client trusts and its key (PEM), for connections no Ingress
    covers: issued by a throwaway CA made in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="k8semu-ingress-") as tmp:
        ca = pki.CertificateAuthority.load_or_create(Path(tmp))
        cert, key = ca.issue(pki.CertSpec("default", DEFAULT_NAME, client=False))
    return cert.public_bytes(serialization.Encoding.PEM), pki.key_pem(key)


class Certificates:
    """The SNI choice. `update(pairs)` with host -> (cert PEM, key PEM) after every sync;
    `context` is what the TLS listener serves with."""

    def __init__(self) -> None:
        self.context = _context(*self_signed())
        self.context.sni_callback = self._choose
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._loaded: dict[str, ssl.SSLContext] = {}  # by the pair's digest
        self._refused: set[str] = set()

    def update(self, pairs: Mapping[str, tuple[bytes, bytes]]) -> None:
        by_host: dict[str, ssl.SSLContext] = {}
        loaded: dict[str, ssl.SSLContext] = {}
        for host, (cert, key) in pairs.items():
            digest = hashlib.sha256(cert + b"\0" + key).hexdigest()
            ctx = loaded.get(digest) or self._loaded.get(digest)
            if ctx is None and digest not in self._refused:
                try:
                    ctx = _context(cert, key)
                except ValueError as exc:
                    self._refused.add(digest)
                    log.warning("ingress certificate not loaded", host=host, error=str(exc))
            if ctx is not None:
                loaded[digest] = by_host[host] = ctx
        self._by_host, self._loaded = by_host, loaded

    def for_name(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context of an SNI name (None: the default certificate)."""
        if not server_name:
            return None
        name = server_name.lower()
        found = self._by_host.get(name)
        if found is None and "." in name:
            found = self._by_host.get("*." + name.partition(".")[2])
        return found

    def _choose(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ctx = self.for_name(server_name)
        if ctx is not None:
            sock.context = ctx
