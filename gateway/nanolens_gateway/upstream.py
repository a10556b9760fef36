"""Channels to the domain services, model resolution, and their errors made ours."""

from __future__ import annotations

import contextlib
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nanolens.common.v1 import common_pb2
from nanolens_runtime import tracing
from nanolens_runtime.bundles import version_key
from nanolens_runtime.errors import (
    GO_CODE_NAMES,
    InvalidArgument,
    NanoLensError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from nanolens_runtime.server import channel_options
from nanolens_runtime.tls import open_channel


class UpstreamError(NanoLensError):
    """A domain service's error, passed on with its code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def translate(exc: grpc.aio.AioRpcError, service: str) -> NanoLensError:
    """Keep the service's code and message; keep the field of an INVALID_ARGUMENT."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field = ""
        status = rpc_status.from_call(exc)
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad) and bad.field_violations:
                field = bad.field_violations[0].field
        return InvalidArgument(exc.details() or "invalid input", field=field)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{service} service unavailable: {exc.details()}")
    if code == grpc.StatusCode.INTERNAL:
        return UpstreamError(code, f"{service} service failed (internal error)")
    return UpstreamError(code, f"{service} service: {exc.details() or GO_CODE_NAMES[code]}")


class ModelCatalogue:
    """A service's models, cached briefly, to resolve "default"/"newest" before computing."""

    def __init__(self, service: str, list_models, ttl: float = 5.0):
        self.service = service
        self._list_models = list_models
        self.ttl = ttl
        self._models: list[common_pb2.ModelInfo] = []
        self._fetched = 0.0

    async def all(self, refresh: bool = False) -> list[common_pb2.ModelInfo]:
        if refresh or time.monotonic() - self._fetched > self.ttl:
            try:
                response = await self._list_models()
            except grpc.aio.AioRpcError as exc:
                raise translate(exc, self.service) from exc
            self._models = list(response.models)
            self._fetched = time.monotonic()
        return self._models

    async def resolve(self, name: str, version: str) -> common_pb2.ModelInfo:
        for refresh in (False, True):
            models = await self.all(refresh)
            if name:
                matching = [m for m in models if m.name == name]
            else:
                matching = [m for m in models if m.is_default]
            if version:
                matching = [m for m in matching if m.version == version]
            if matching:
                return max(matching, key=lambda m: version_key(m.version))
        what = f"model {name or '(default)'}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} is not registered with the {self.service} service", "model",
                       f"{name}:{version}")

    async def resolve_use(self, use: str, version: str = "") -> common_pb2.ModelInfo:
        """The model that runs for ``use`` (for example a TEM method) when no model is named:
        the newest entry whose ``default_for`` lists it (``version`` pins one)."""
        for refresh in (False, True):
            matching = [m for m in await self.all(refresh) if use in m.default_for
                        and (not version or m.version == version)]
            if matching:
                return max(matching, key=lambda m: version_key(m.version))
        pinned = f" version {version}" if version else ""
        raise NotFound(f"the {self.service} service has no model for {use}{pinned}", "model", use)


class ServiceClient:
    """A channel to one domain service, its stub, and its model catalogue. Adapters call the
    service through :meth:`unary` or, for streams, inside :meth:`errors`: one place checks the
    message size, passes the deadline on and makes the service's errors ours."""

    def __init__(self, service: str, address: str, max_message_mb: int, stub_class, list_request,
                 credentials: grpc.ChannelCredentials | None = None):
        self.service = service
        self.max_message_mb = max_message_mb
        self.channel = open_channel(address, credentials, channel_options(max_message_mb),
                                    tracing.client_interceptors())  # the trace goes on to the service
        self.stub = stub_class(self.channel)
        self.catalogue = ModelCatalogue(service, lambda: self.stub.ListModels(list_request, timeout=10))

    async def close(self) -> None:
        await self.channel.close()

    async def unary(self, method: str, request, deadline_s: float | None, what: str, hint: str = ""):
        """``stub.<method>(request)`` within ``deadline_s``; ``what`` names the input in a size refusal
        (gRPC's own names no setting), ``hint`` says what the caller can do about it."""
        size = request.ByteSize()
        if size > self.max_message_mb * 2**20:
            raise ResourceExhausted(f"{what} is {size / 2**20:.1f} MiB as one message, above the {self.max_message_mb} "
                                    f"MiB the {self.service} service takes (NANOLENS_MAX_MESSAGE_MB)"
                                    + (f"; {hint}" if hint else ""))
        with self.errors():
            return await getattr(self.stub, method)(request, timeout=deadline_s)

    @contextlib.contextmanager
    def errors(self):
        """Around a streaming call: the service's errors, made ours (:func:`translate`)."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.service) from exc
