"""Settings from ``NANOLENS_*`` environment variables, with documented defaults.

Each field's metadata carries its variable name and a one-line description;
``describe()`` lists them; ``nanolens settings`` prints every process's settings and
``docs/reference/settings.md`` is generated from the same list.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from nanolens_runtime.options import parse_yes_no


def setting(env: str, default: Any, doc: str, secret: bool = False) -> Any:
    """A field read from ``env``; a secret one is left out of the dataclass's repr."""
    return field(default=default, metadata={"env": env, "doc": doc}, repr=not secret)


def _parse(raw: str, kind: type, env: str) -> Any:
    if kind is bool:
        value = parse_yes_no(raw)
        if value is None:
            raise ValueError(f"{env}={raw!r} is not a boolean (use true/false)")
        return value
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{env}={raw!r} is not a valid {kind.__name__}") from exc


def from_env(cls, environ: dict[str, str] | None = None, **overrides):
    """Build a settings dataclass from the environment; ``overrides`` win (used by tests)."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(cls):
        if f.name in overrides:
            continue
        env = f.metadata.get("env")
        if env and env in environ:
            kind = type(f.default) if f.default is not MISSING else str
            values[f.name] = _parse(environ[env], kind, env)
    return cls(**values, **overrides)


def describe(cls) -> list[tuple[str, Any, str]]:
    return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(cls) if "env" in f.metadata]


@dataclass(frozen=True)
class StorageSettings:
    s3_endpoint: str = setting("NANOLENS_S3_ENDPOINT", "127.0.0.1:9000", "S3/MinIO endpoint host:port")
    s3_access_key: str = setting("NANOLENS_S3_ACCESS_KEY", "", "S3 access key (from a Secret)")
    s3_secret_key: str = setting("NANOLENS_S3_SECRET_KEY", "", "S3 secret key (from a Secret)")
    s3_secure: bool = setting("NANOLENS_S3_SECURE", False, "use TLS to reach S3")
    s3_region: str = setting("NANOLENS_S3_REGION", "us-east-1", "S3 region")
    models_bucket: str = setting("NANOLENS_MODELS_BUCKET", "models", "bucket of registered model bundles")

    def __repr__(self) -> str:  # never print secrets
        return f"StorageSettings(endpoint={self.s3_endpoint!r}, secure={self.s3_secure})"


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("NANOLENS_GRPC_HOST", "[::]", "address the gRPC server binds")
    grpc_port: int = setting("NANOLENS_GRPC_PORT", 50051, "gRPC port (0 picks a free one)")
    metrics_host: str = setting("NANOLENS_METRICS_HOST", "0.0.0.0",
                                "address /metrics binds (the local stack: its loopback host)")
    metrics_port: int = setting("NANOLENS_METRICS_PORT", 9100,
                                "Prometheus /metrics port (0 picks a free one, -1 disables)")
    log_level: str = setting("NANOLENS_LOG_LEVEL", "INFO", "log level")
    log_format: str = setting("NANOLENS_LOG_FORMAT", "json", "json or text")
    max_message_mb: int = setting("NANOLENS_MAX_MESSAGE_MB", 64, "largest gRPC message accepted or sent, MiB")
    drain_delay_seconds: float = setting(
        "NANOLENS_DRAIN_DELAY_SECONDS", 2.0,
        "on SIGTERM, NOT_SERVING this long before new calls are refused (load balancers catch up)")
    grace_seconds: float = setting("NANOLENS_GRACE_SECONDS", 20.0, "then in-flight calls get this long to finish")
    max_concurrent_rpcs: int = setting("NANOLENS_MAX_CONCURRENT_RPCS", 256,
                                      "unary RPCs in flight beyond this get RESOURCE_EXHAUSTED (counted in "
                                      "nanolens_rpc_refused_total); health checks are never refused")
    max_concurrent_streams: int = setting("NANOLENS_MAX_CONCURRENT_STREAMS", 512,
                                         "streaming RPCs (WatchJob, AnalyzeStream, AnalyzeMany, Upload, Download) "
                                         "in flight beyond this get RESOURCE_EXHAUSTED; a pool apart from "
                                         "NANOLENS_MAX_CONCURRENT_RPCS, so open streams never lock out short calls")


@dataclass(frozen=True)
class InferenceSettings:
    model_dir: str = setting("NANOLENS_MODEL_DIR", "",
                             "extra local bundle root (<name>/<version>/); shipped bundles are always loaded")
    max_batch_size: int = setting("NANOLENS_MAX_BATCH_SIZE", 64,
                                  "largest dynamic batch, in items (1 disables batching)")
    max_batch_delay_ms: float = setting("NANOLENS_MAX_BATCH_DELAY_MS", 5.0, "longest wait to fill a batch")
    inference_threads: int = setting("NANOLENS_INFERENCE_THREADS", 0, "thread pool for model runs (0: CPU count)")
    ort_providers: str = setting("NANOLENS_ORT_PROVIDERS", "auto", "auto, cpu or cuda")
    ort_intra_op_threads: int = setting("NANOLENS_ORT_INTRA_OP_THREADS", 1, "onnxruntime threads per run")
