"""Where the gateway is and how to reach it, from ``NANOLENS_*`` environment variables: the same
settings for this package, the ``nanolens`` command and ``nanolens settings``."""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc


def setting(env: str, default: Any, doc: str, secret: bool = False) -> Any:
    """A field read from ``env`` (the metadata the platform's settings listings read)."""
    return field(default=default, metadata={"env": env, "doc": doc}, repr=not secret)


@dataclass(frozen=True)
class ClientSettings:
    gateway: str = setting("NANOLENS_GATEWAY", "127.0.0.1:50050", "gateway host:port that clients and the CLI call")
    token: str = setting("NANOLENS_TOKEN", "", "bearer token clients send (empty: none)", secret=True)
    ca: str = setting("NANOLENS_GATEWAY_CA", "", "PEM CA that signed the gateway's certificate (empty: plaintext)")
    cert: str = setting("NANOLENS_CLIENT_CERT", "", "PEM client certificate, where the gateway asks for one")
    key: str = setting("NANOLENS_CLIENT_KEY", "", "PEM private key of NANOLENS_CLIENT_CERT")
    timeout_seconds: float = setting("NANOLENS_CLIENT_TIMEOUT_SECONDS", 60.0,
                                     "deadline of a client call that moves no file and runs no analysis")
    analysis_timeout_seconds: float = setting("NANOLENS_ANALYSIS_TIMEOUT_SECONDS", 600.0,
                                              "deadline of a client's upload, download or analysis")
    attempts: int = setting("NANOLENS_CLIENT_ATTEMPTS", 5,
                            "tries of an idempotent client call refused as UNAVAILABLE or overloaded (1: no retry)")
    max_message_mb: int = setting("NANOLENS_CLIENT_MAX_MESSAGE_MB", 64, "largest message a client sends or receives")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> ClientSettings:
        """The settings from the environment; ``overrides`` (not None) win.

        Raises
        ------
        ValueError
            Naming the variable whose value is not of its type.
        """
        environ = os.environ if environ is None else environ
        values = {k: v for k, v in overrides.items() if v is not None}
        for f in fields(cls):
            env = f.metadata["env"]
            if f.name in values or env not in environ:
                continue
            kind = type(f.default) if f.default is not MISSING else str
            try:
                values[f.name] = kind(environ[env])
            except ValueError:
                raise ValueError(f"{env}={environ[env]!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials from the CA (and client certificate), or None for plaintext."""
        return channel_credentials(self.ca, self.cert, self.key,
                                   ("NANOLENS_GATEWAY_CA", "NANOLENS_CLIENT_CERT", "NANOLENS_CLIENT_KEY"))

    def channel_options(self) -> list[tuple[str, int | str]]:
        limit = self.max_message_mb * 2**20
        return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                # every address the name resolves to gets calls (a headless Service: every replica)
                ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}'),
                # a gateway back after a restart is found within seconds (gRPC's default waits up to 2 min)
                ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 5000)]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror}") from None


def channel_credentials(ca: str, cert: str = "", key: str = "",
                        names: tuple[str, str, str] = ("CA", "CERT", "KEY")) -> grpc.ChannelCredentials | None:
    """Credentials for a channel that checks the server against ``ca`` and, given ``cert`` and
    ``key``, presents a client certificate; None (plaintext) without ``ca``. ``names``: the
    settings the three come from, for the error messages."""
    ca_name, cert_name, key_name = names
    if not ca:
        if cert or key:
            raise ValueError(f"{cert_name} and {key_name} need {ca_name}")
        return None
    if bool(cert) != bool(key):
        raise ValueError(f"{cert_name} and {key_name} go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, ca_name),
        private_key=_read(key, key_name) if key else None,
        certificate_chain=_read(cert, cert_name) if cert else None)
