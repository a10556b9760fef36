"""TLS for every NanoLens gRPC server and the channels between them, from PEM files (Kubernetes
Secrets of type kubernetes.io/tls, as cert-manager writes them, mounted as files).

A server with ``NANOLENS_TLS_CERT`` and ``NANOLENS_TLS_KEY`` serves TLS; with
``NANOLENS_TLS_CLIENT_CA`` as well it requires client certificates signed by that CA (mutual TLS:
the domain services accept only the gateway). The gateway's channels to the domain services use
``NANOLENS_UPSTREAM_CA`` to check the services and present ``NANOLENS_UPSTREAM_CERT``/``_KEY``.
Kubelet's gRPC probes speak plaintext only, so a TLS server can also serve its health service, and
nothing else, on ``NANOLENS_PROBE_PORT``. Everything off by default: the local stack runs plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

# One implementation for every channel that checks a server: the gateway's to the services, and clients'
from nanolens_client.settings import channel_credentials
from nanolens_runtime.settings import setting


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True)
class TlsSettings:
    cert: str = setting("NANOLENS_TLS_CERT", "", "PEM certificate chain the gRPC server presents (empty: plaintext)")
    key: str = setting("NANOLENS_TLS_KEY", "", "PEM private key of NANOLENS_TLS_CERT")
    client_ca: str = setting("NANOLENS_TLS_CLIENT_CA", "",
                             "PEM CA whose client certificates the server requires (mutual TLS; empty: none asked)")
    probe_port: int = setting("NANOLENS_PROBE_PORT", 0,
                              "plaintext port serving only grpc.health.v1 for kubelet probes (0: none)")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The server's credentials, or None for plaintext.

        Raises
        ------
        ValueError
            Naming the setting whose file is missing, or a key without a certificate.
        """
        if not (self.cert or self.key):
            if self.client_ca:
                raise ValueError("NANOLENS_TLS_CLIENT_CA needs NANOLENS_TLS_CERT and NANOLENS_TLS_KEY")
            return None
        if not (self.cert and self.key):
            raise ValueError("NANOLENS_TLS_CERT and NANOLENS_TLS_KEY go together")
        pair = [(_read(self.key, "NANOLENS_TLS_KEY"), _read(self.cert, "NANOLENS_TLS_CERT"))]
        ca = _read(self.client_ca, "NANOLENS_TLS_CLIENT_CA") if self.client_ca else None
        return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class UpstreamTlsSettings:
    ca: str = setting("NANOLENS_UPSTREAM_CA", "",
                      "PEM CA that signed the domain services' certificates (empty: plaintext to them)")
    cert: str = setting("NANOLENS_UPSTREAM_CERT", "", "PEM client certificate the gateway presents (mutual TLS)")
    key: str = setting("NANOLENS_UPSTREAM_KEY", "", "PEM private key of NANOLENS_UPSTREAM_CERT")

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        return channel_credentials(self.ca, self.cert, self.key,
                                   ("NANOLENS_UPSTREAM_CA", "NANOLENS_UPSTREAM_CERT", "NANOLENS_UPSTREAM_KEY"))


def open_channel(address: str, credentials: grpc.ChannelCredentials | None, options,
                 interceptors=None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
