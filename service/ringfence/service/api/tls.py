"""TLS and mutual TLS for the gRPC port, with certificate files re-read when they change (a
renewed cert-manager or Vault certificate is picked up on the next handshake, no restart)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from ringfence.service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


class _ReloadingConfig:
    """Hands gRPC a new certificate configuration when any of the files changed.

    gRPC calls ``fetch`` before each TLS handshake (per connection, not per request); a stat of
    two or three files is cheap. A half-written or unreadable renewal keeps the old material.
    """

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.initial = self._load()

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self._files.paths():
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        f = self._files
        return grpc.ssl_server_certificate_configuration(
            [(f.key.read_bytes(), f.cert.read_bytes())],
            root_certificates=f.client_ca.read_bytes() if f.client_ca else None)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            with self._lock:
                stamp = self._stat()
                if stamp == self._stamp:
                    return None
                config = self._load()
                self._stamp = stamp
        except Exception:  # never raise into gRPC's handshake
            log.exception("TLS files changed but could not be read; keeping the old ones")
            return None
        log.info("TLS certificate files reloaded")
        return config


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``; mutual TLS when ``files.client_ca`` is set."""
    for path in files.paths():
        if not path.is_file():
            raise ValueError(f"TLS file {path} does not exist")
    config = _ReloadingConfig(files)
    return grpc.dynamic_ssl_server_credentials(
        config.initial, config.fetch,
        require_client_authentication=files.client_ca is not None)


def bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Add the gRPC port, with TLS when configured; returns the bound port."""
    address = f"{settings.host}:{settings.port}"
    files = TlsFiles.from_settings(settings)
    if files is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(files))


def channel_credentials(ca: Path | None, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """Client side: trust ``ca`` (None: the system roots); present ``cert``/``key`` for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None)
