"""Prometheus metrics: go-grpc-prometheus names for RPCs, ``nanolens_*`` for the ML stages.

The RPC metrics keep the names and labels of go-grpc-prometheus so that community
dashboards work unchanged; they are observed by ``interceptors.MetricsAndErrors``
after each call has finished, with its final status code.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

grpc_started = Counter("grpc_server_started_total", "RPCs started on the server.", RPC_LABELS)
grpc_handled = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, regardless of success or failure.",
    RPC_LABELS + ("grpc_code",),
)
grpc_msg_received = Counter("grpc_server_msg_received_total", "Stream messages received by the server.", RPC_LABELS)
grpc_msg_sent = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", RPC_LABELS)
rpc_refused = Counter("nanolens_rpc_refused_total",
                      "RPCs refused with RESOURCE_EXHAUSTED because the server had NANOLENS_MAX_CONCURRENT_RPCS "
                      "unary or NANOLENS_MAX_CONCURRENT_STREAMS streaming calls in flight.", RPC_LABELS)
rpc_in_flight = Gauge("nanolens_rpc_in_flight",
                      "RPCs in flight under a concurrency limit, by pool (unary, streams); health checks are not "
                      "counted.", ("pool",))
grpc_handling_seconds = Histogram(
    "grpc_server_handling_seconds", "Response latency of RPCs handled by the server.", RPC_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

STAGES = ("fetch", "decode", "preprocess", "inference", "postprocess", "store")
stage_seconds = Histogram(
    "nanolens_stage_duration_seconds", "Time spent in one pipeline stage.", ("service", "stage"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
batch_size = Histogram(
    "nanolens_batch_size", "Items per model run after dynamic batching.", ("service", "model"),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384),
)
batch_queue_wait = Histogram(
    "nanolens_batch_queue_wait_seconds", "Time a request waited for its batch to start.", ("service", "model"),
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
batch_queue_depth = Gauge("nanolens_batch_queue_depth", "Requests waiting for a batch.", ("service", "model"))
models_loaded = Gauge("nanolens_models_loaded", "Model bundles loaded and warm.", ("service",))
build_info = Gauge("nanolens_build_info", "Build information (value is always 1).",
                   ("service", "version", "provider", "python"))

_service = "unknown"


def init(service: str, version: str, provider: str) -> None:
    """Name this process's service for the ``service`` label and publish build info."""
    global _service
    _service = service
    build_info.labels(service, version, provider, platform.python_version()).set(1)
    models_loaded.labels(service).set(0)


def service_name() -> str:
    return _service


def serve_http(port: int, host: str = "0.0.0.0") -> int:
    """Start /metrics on its own port; returns the bound port (useful with port 0)."""
    if port < 0:
        return -1
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server.server_address[1]


class StageTimer:
    """Times pipeline stages for one request: histogram plus a list for provenance."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        stage_seconds.labels(_service, name).observe(seconds)
        self.timings.append((name, seconds))
