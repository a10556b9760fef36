"""The asyncio gRPC server every NanoLens process runs.

- standard health service: NOT_SERVING until the models are loaded and warm,
  NOT_SERVING again as soon as SIGTERM arrives;
- reflection, so that clients that are not ours (``buf curl``, grpcurl) can call it;
- explicit message-size and concurrency limits;
- graceful drain: in-flight calls get ``grace_seconds`` to finish, new ones are refused.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from nanolens_runtime import logs, metrics, tracing
from nanolens_runtime.interceptors import MetricsAndErrors
from nanolens_runtime.settings import ServerSettings, from_env
from nanolens_runtime.tls import TlsSettings
from nanolens_runtime.tracing import ServerTracing

log = logging.getLogger("nanolens.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Servicer:
    """A servicer object, the generated function that adds it, and its full service name."""

    impl: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    limit = settings.max_message_mb * 1024 * 1024
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ]


def channel_options(max_message_mb: int) -> list[tuple[str, int | str]]:
    """Client channel options: message limits, round_robin over every address the name resolves
    to (with ``dns:///<headless service>`` each pod gets calls, not just the first one connected), and
    reconnection tried every 5 s at most while a server is away (gRPC's default grows to 2 minutes,
    which a job paused by an outage would wait out after the service is back)."""
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
            ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}'),
            ("grpc.max_reconnect_backoff_ms", 5000)]


class GrpcApp:
    """One gRPC server with health, reflection, metrics/error interceptor and drain."""

    def __init__(self, servicers: Sequence[Servicer], settings: ServerSettings,
                 extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (), tls: TlsSettings | None = None):
        self.settings = settings
        self.tls = tls or TlsSettings()
        self.probe_server: grpc.aio.Server | None = None
        self.probe_port: int | None = None
        self.servicers = list(servicers)
        self.health = HealthServicer()
        self.calls = MetricsAndErrors(settings.max_concurrent_rpcs, settings.max_concurrent_streams)
        self.server = grpc.aio.server(
            interceptors=[self.calls, ServerTracing(), *extra_interceptors],
            options=server_options(settings),
        )
        for servicer in self.servicers:
            servicer.add_to_server(servicer.impl, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in self.servicers]
        reflection.enable_server_reflection(
            names + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.port: int | None = None
        self._stopping: asyncio.Task | None = None

    async def start(self, address: str | None = None) -> int:
        """Bind and start, NOT_SERVING; returns the bound port."""
        address = address or f"{self.settings.host}:{self.settings.grpc_port}"
        credentials = self.tls.server_credentials()
        self.port = (self.server.add_insecure_port(address) if credentials is None
                     else self.server.add_secure_port(address, credentials))
        if self.port == 0:
            raise OSError(f"could not bind gRPC server to {address}")
        if self.tls.probe_port:
            # kubelet's gRPC probes speak plaintext: the same health states, and nothing else, there
            self.probe_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.probe_server)
            probe_address = f"{address.rsplit(':', 1)[0]}:{self.tls.probe_port}"
            self.probe_port = self.probe_server.add_insecure_port(probe_address)
            await self.probe_server.start()
        await self.set_serving(False)
        await self.server.start()
        log.info("grpc listening", extra={"port": self.port, "tls": credentials is not None,
                                          "mutual_tls": bool(self.tls.client_ca), "probe_port": self.probe_port})
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *(s.full_name for s in self.servicers)]:
            await self.health.set(name, status)

    async def drain(self, grace: float | None = None, delay: float | None = None) -> None:
        """NOT_SERVING now; after ``delay`` s refuse new calls; in-flight ones get ``grace`` s more."""
        grace = self.settings.grace_seconds if grace is None else grace
        delay = self.settings.drain_delay_seconds if delay is None else delay
        log.info("draining", extra={"grace_seconds": grace, "delay_seconds": delay})
        await self.health.enter_graceful_shutdown()
        # Probes and load balancers see NOT_SERVING before the port stops taking calls.
        await asyncio.sleep(delay)
        await self.server.stop(grace)
        if self.probe_server is not None:
            await self.probe_server.stop(0)
        log.info("stopped")

    def request_drain(self) -> asyncio.Task:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.drain())
        return self._stopping

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def create_server(servicers: Sequence[Servicer], address: str = "127.0.0.1:0",
                        settings: ServerSettings | None = None) -> tuple[GrpcApp, int]:
    """Start a server on a free port and mark it SERVING: the shape tests want."""
    app = GrpcApp(servicers, settings or ServerSettings(metrics_port=-1))
    port = await app.start(address)
    await app.set_serving(True)
    return app, port


async def serve(service: str, version: str, provider: str, settings: ServerSettings,
                build: Callable[[], Awaitable[tuple[Sequence[Servicer], Callable[[], Awaitable[None]]]]],
                extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
    """Run a process until SIGTERM/SIGINT: metrics port, server, model warm-up, drain.

    ``build`` returns the servicers and an async ``warm_up`` that loads models; the
    server listens (NOT_SERVING) while it runs so that probes get an answer.
    """
    logs.configure(service, settings.log_level, settings.log_format)
    tracing.configure(service, version)
    # Model and numpy work runs in pool threads while the event loop parses multi-MB messages; a
    # shorter GIL switch interval (5 ms by default) lets the workers back in sooner (about 10 % on
    # streamed maps here).
    sys.setswitchinterval(0.0005)
    metrics.init(service, version, provider)
    metrics_port = metrics.serve_http(settings.metrics_port, settings.metrics_host)
    servicers, warm_up = await build()
    app = GrpcApp(servicers, settings, extra_interceptors, from_env(TlsSettings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_drain)
    port = await app.start()
    await warm_up()
    if app._stopping is None:
        await app.set_serving(True)
        log.info("serving", extra={"grpc_port": port, "metrics_port": metrics_port})
        # Machine-readable line for process supervisors (`nanolens up`, tests).
        print(f"NANOLENS_SERVING service={service} grpc={port} metrics={metrics_port}", flush=True)
    await app.wait()
    tracing.shutdown()  # the spans still queued go out before the process ends
