"""OpenTelemetry traces: one span per RPC on every server, the context carried in gRPC metadata
(W3C ``traceparent``) from the gateway to the domain services, the trace id in every log line.

Spans are exported over OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, the standard OpenTelemetry variables, as are
``OTEL_TRACES_SAMPLER`` and its argument. Without an endpoint no SDK is installed: the API's
no-op tracer costs a few function calls per RPC.
"""

from __future__ import annotations

import logging
import os

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger("nanolens.tracing")
tracer = trace.get_tracer("nanolens")
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configure(service: str, version: str) -> bool:
    """Install the SDK with an OTLP exporter if an endpoint is configured; returns whether it did."""
    if not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": version}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP", extra={"endpoint": next(os.environ[v] for v in ENDPOINT_VARIABLES
                                                                   if os.environ.get(v))})
    return True


def shutdown() -> None:
    """Flush the spans still queued (on drain)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def trace_id() -> str:
    """The current trace id in hex, or "" outside a sampled span (for log lines)."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def outgoing_metadata(metadata=None) -> list[tuple[str, str]]:
    """``metadata`` plus the current trace context, for a call to another service."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*(metadata or ()), *carrier.items()]


class _MetadataGetter:
    def get(self, carrier, key):
        values = [v for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier):
        return [k for k, _ in carrier]


class ServerTracing(grpc.aio.ServerInterceptor):
    """A SERVER span around every call, child of the caller's context when its metadata carries one."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith("/grpc.health.v1.Health/"):
            return handler
        parent = propagate.extract(handler_call_details.invocation_metadata or (), getter=_MetadataGetter())
        service, _, name = method.strip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def start():
            return tracer.start_as_current_span(method.strip("/"), context=parent, kind=SpanKind.SERVER,
                                                attributes=attributes, record_exception=False,
                                                set_status_on_exception=False)

        def fail(span, exc: BaseException) -> None:
            code = getattr(exc, "code", None)
            span.set_attribute("rpc.grpc.status_code", code.value[0] if isinstance(code, grpc.StatusCode) else 2)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

        async def unary_unary(request, ctx):
            with start() as span:
                try:
                    return await handler.unary_unary(request, ctx)
                except BaseException as exc:
                    fail(span, exc)
                    raise

        async def stream_unary(requests, ctx):
            with start() as span:
                try:
                    return await handler.stream_unary(requests, ctx)
                except BaseException as exc:
                    fail(span, exc)
                    raise

        async def unary_stream(request, ctx):
            with start() as span:
                try:
                    async for response in handler.unary_stream(request, ctx):
                        yield response
                except BaseException as exc:
                    fail(span, exc)
                    raise

        async def stream_stream(requests, ctx):
            with start() as span:
                try:
                    async for response in handler.stream_stream(requests, ctx):
                        yield response
                except BaseException as exc:
                    fail(span, exc)
                    raise

        kwargs = dict(request_deserializer=handler.request_deserializer,
                      response_serializer=handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)


class _ClientMetadata:
    """Adds the current trace context to every outgoing call's metadata."""

    async def _with_context(self, continuation, details, request):
        details = grpc.aio.ClientCallDetails(details.method, details.timeout,
                                             grpc.aio.Metadata(*outgoing_metadata(details.metadata)),
                                             details.credentials, details.wait_for_ready)
        return await continuation(details, request)


class _UnaryUnary(_ClientMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._with_context(continuation, client_call_details, request)


class _UnaryStream(_ClientMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._with_context(continuation, client_call_details, request)


class _StreamUnary(_ClientMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._with_context(continuation, client_call_details, request_iterator)


class _StreamStream(_ClientMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._with_context(continuation, client_call_details, request_iterator)


def client_interceptors() -> list:
    """Interceptors for an aio channel that carry the trace context to the called service."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
