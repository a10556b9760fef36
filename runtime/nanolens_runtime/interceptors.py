"""The server interceptor that turns errors into statuses, observes RPC metrics and limits
concurrent calls.

One interceptor does all three because they need the call's *final* status code: the
metrics are observed after the handler has finished (unlike interceptors that time
only the handler's construction), for all four RPC types, refusals included (gRPC's own
``maximum_concurrent_rpcs`` refuses in the core, where no metric sees it, and counts health
checks too).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_status import rpc_status

from nanolens_runtime import metrics
from nanolens_runtime.errors import GO_CODE_NAMES, INTERNAL_MESSAGE, NanoLensError, ResourceExhausted, to_rpc_status

log = logging.getLogger("nanolens.rpc")

_RPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


class _Call:
    """Bookkeeping for one RPC: labels, start time and the code it ends with."""

    def __init__(self, rpc_type: str, full_method: str):
        _, service, method = full_method.split("/")
        self.labels = (rpc_type, service, method)
        self.method = full_method
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        metrics.grpc_started.labels(*self.labels).inc()

    def received(self) -> None:
        metrics.grpc_msg_received.labels(*self.labels).inc()

    def sent(self) -> None:
        metrics.grpc_msg_sent.labels(*self.labels).inc()

    def finish(self, context: grpc.aio.ServicerContext) -> None:
        # A handler may set a code without raising (context.set_code).
        if self.code == grpc.StatusCode.OK and context.code() not in (None, grpc.StatusCode.OK):
            self.code = context.code()
        metrics.grpc_handled.labels(*self.labels, GO_CODE_NAMES[self.code]).inc()
        metrics.grpc_handling_seconds.labels(*self.labels).observe(time.perf_counter() - self.start)

    async def fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Abort the RPC with the status ``exc`` maps to; re-raises what must propagate."""
        if isinstance(exc, grpc.aio.AbortError):
            # The handler aborted itself; the code is already on the context.
            self.code = context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, asyncio.CancelledError):
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, NanoLensError):
            self.code = exc.code
            log.info("rpc failed", extra={"method": self.method, "code": exc.code.name, "error": exc.message})
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(exc)))
        self.code = grpc.StatusCode.INTERNAL
        log.error("unhandled error", exc_info=exc, extra={"method": self.method})
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class ConcurrencyLimit:
    """At most ``limit`` unary calls and ``stream_limit`` streaming calls in flight (0: no limit).

    Streams have a pool of their own: a stream lives as long as its caller keeps it (a ``WatchJob``
    follows a job for hours), so open streams must not take the slots of the short calls. Health
    checks and reflection are never refused: a probe must be answered when the server is busiest,
    or the orchestrator restarts a server that is only busy."""

    EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    def __init__(self, limit: int = 0, stream_limit: int = 0):
        self.limit = limit
        self.stream_limit = stream_limit
        self.in_flight = 0  # unary calls; both counts are touched only on the event loop
        self.streams = 0

    @contextlib.contextmanager
    def slot(self, call: _Call, streaming: bool):
        if call.method.startswith(self.EXEMPT):
            yield
            return
        pool, setting = ("streams", "NANOLENS_MAX_CONCURRENT_STREAMS") if streaming else (
            "in_flight", "NANOLENS_MAX_CONCURRENT_RPCS")
        limit = self.stream_limit if streaming else self.limit
        if 0 < limit <= getattr(self, pool):
            metrics.rpc_refused.labels(*call.labels).inc()
            what = "streaming calls" if streaming else "calls"
            raise ResourceExhausted(f"the server has {limit} {what} in flight ({setting}): try again shortly")
        gauge = metrics.rpc_in_flight.labels("streams" if streaming else "unary")
        setattr(self, pool, getattr(self, pool) + 1)
        gauge.inc()
        try:
            yield
        finally:
            setattr(self, pool, getattr(self, pool) - 1)
            gauge.dec()


async def _counted(iterator: AsyncIterator, call: _Call) -> AsyncIterator:
    async for item in iterator:
        call.received()
        yield item


def _begin(rpc_type: str, method: str, request_or_iterator, streaming_in: bool):
    call = _Call(rpc_type, method)
    if streaming_in:
        return call, _counted(request_or_iterator, call)
    call.received()
    return call, request_or_iterator


def _wrap_awaitable(behavior: Callable[..., Awaitable], rpc_type: str, method: str, streaming_in: bool,
                    counts_response: bool, limit: ConcurrencyLimit):
    """A handler that returns its response (unary response), or one that writes with
    ``context.write`` (e.g. the health Watch), whose messages are not counted."""
    async def handler(request_or_iterator, context):
        call, request_or_iterator = _begin(rpc_type, method, request_or_iterator, streaming_in)
        try:
            with limit.slot(call, rpc_type != "unary"):
                response = await behavior(request_or_iterator, context)
            if counts_response:
                call.sent()
            return response
        except BaseException as exc:  # noqa: BLE001 - every exception is mapped or re-raised
            await call.fail(context, exc)
        finally:
            call.finish(context)

    return handler


def _wrap_stream_response(behavior: Callable, rpc_type: str, method: str, streaming_in: bool,
                          limit: ConcurrencyLimit):
    if not inspect.isasyncgenfunction(behavior):
        return _wrap_awaitable(behavior, rpc_type, method, streaming_in, False, limit)

    async def generator(request_or_iterator, context):
        call, request_or_iterator = _begin(rpc_type, method, request_or_iterator, streaming_in)
        try:
            with limit.slot(call, True):
                async for response in behavior(request_or_iterator, context):
                    call.sent()
                    yield response
        except BaseException as exc:  # noqa: BLE001
            await call.fail(context, exc)
        finally:
            call.finish(context)

    return generator


class MetricsAndErrors(grpc.aio.ServerInterceptor):
    def __init__(self, max_concurrent_rpcs: int = 0, max_concurrent_streams: int = 0):
        self.limit = ConcurrencyLimit(max_concurrent_rpcs, max_concurrent_streams)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rpc_type = _RPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        kwargs = dict(
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        if rpc_type == "unary":
            return grpc.unary_unary_rpc_method_handler(
                _wrap_awaitable(handler.unary_unary, rpc_type, method, False, True, self.limit), **kwargs
            )
        if rpc_type == "client_stream":
            return grpc.stream_unary_rpc_method_handler(
                _wrap_awaitable(handler.stream_unary, rpc_type, method, True, True, self.limit), **kwargs
            )
        if rpc_type == "server_stream":
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, rpc_type, method, False, self.limit), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, rpc_type, method, True, self.limit), **kwargs
        )
