"""Bearer-token authentication at the front door.

Callers send ``authorization: Bearer <token>``. Tokens come from ``NANOLENS_GATEWAY_TOKENS``
(comma-separated, from a Secret); with none configured the gateway runs open, which is meant for
the local stack only and is logged as a warning. Health checks and reflection stay open so that
probes and generic clients can find their way.
"""

from __future__ import annotations

import hmac
import logging

import grpc

from nanolens_runtime.errors import Unauthenticated

log = logging.getLogger("nanolens.auth")
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def parse_tokens(raw: str) -> tuple[bytes, ...]:
    return tuple(t.strip().encode() for t in raw.split(",") if t.strip())


def _rejecting(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that refuses the call (the error interceptor
    around it turns the exception into UNAUTHENTICATED and counts it)."""
    async def refuse(request_or_iterator, context):
        raise Unauthenticated(message)

    async def refuse_stream(request_or_iterator, context):
        raise Unauthenticated(message)
        yield  # an async generator, like the streaming handler it replaces

    makers = {(False, False): grpc.unary_unary_rpc_method_handler, (True, False): grpc.stream_unary_rpc_method_handler,
              (False, True): grpc.unary_stream_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = makers[(handler.request_streaming, handler.response_streaming)]
    return make(refuse_stream if handler.response_streaming else refuse,
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: tuple[bytes, ...]):
        self.tokens = tokens

    def allows(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() == "bearer":
                    # compare_digest against every token: the time taken says nothing about which matched
                    return any([hmac.compare_digest(token.encode(), t) for t in self.tokens])
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        if self.allows(handler_call_details.invocation_metadata):
            return handler
        return _rejecting(handler, "missing or unknown bearer token (metadata 'authorization: Bearer <token>')")
