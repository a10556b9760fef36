"""Typed errors: every failed call raises a :class:`GatewayError` subclass that carries the status
code, the message and, where the gateway named one, the field at fault.

The gateway sends its errors as a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer (a ``BadRequest`` naming the field for INVALID_ARGUMENT, a ``ResourceInfo`` for
NOT_FOUND). Those messages are read here from wire-compatible copies in a private descriptor
pool, so the client needs no ``googleapis-common-protos`` and clashes with no copy of them.
"""

from __future__ import annotations

from functools import cache

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class GatewayError(Exception):
    """A call the gateway (or the network) refused. ``code``: the gRPC status code; ``field``: the
    request field at fault (``options.pixel_size_nm``, ``header.key``), empty when none was named;
    ``violations``: every (field, description) the gateway listed; ``resource``: the resource
    type and name of a NOT_FOUND; ``from_platform``: whether the gateway's own code raised it
    (False for gRPC's own errors: a connection refused, a deadline, a proxy's limit)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None, field: str = "",
                 violations: tuple[tuple[str, str], ...] = (), resource: tuple[str, str] = ("", ""),
                 from_platform: bool = False):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.violations = violations
        self.resource = resource
        self.from_platform = from_platform

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code.name}: {self.message}{where}"


class InvalidArgument(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(GatewayError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(GatewayError):
    code = grpc.StatusCode.CANCELLED


class Aborted(GatewayError):
    code = grpc.StatusCode.ABORTED


class Internal(GatewayError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in GatewayError.__subclasses__()}


@cache
def _detail_messages() -> dict[str, type]:
    """google.rpc Status, BadRequest and ResourceInfo, field for field, in a pool of their own."""
    proto = descriptor_pb2.FileDescriptorProto(name="nanolens_client/rpc_details.proto",
                                               package="nanolens_client.rpc", syntax="proto3")
    string, int32, bytes_, message = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                                      descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                                      descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                                      descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
    optional, repeated = (descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                          descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    shapes = {
        "Any": [("type_url", 1, string), ("value", 2, bytes_)],
        "Status": [("code", 1, int32), ("message", 2, string), ("details", 3, "Any")],
        "FieldViolation": [("field", 1, string), ("description", 2, string)],
        "BadRequest": [("field_violations", 1, "FieldViolation")],
        "ResourceInfo": [("resource_type", 1, string), ("resource_name", 2, string), ("owner", 3, string),
                         ("description", 4, string)],
    }
    for name, fields in shapes.items():
        msg = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            if isinstance(kind, str):
                msg.field.add(name=field_name, number=number, label=repeated, type=message,
                              type_name=f".nanolens_client.rpc.{kind}")
            else:
                msg.field.add(name=field_name, number=number, label=optional, type=kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"nanolens_client.rpc.{name}"))
            for name in shapes}


def from_item_error(code: str, message: str, field: str = "") -> GatewayError:
    """The typed error of one item of ``analyse_many`` (the gateway names its code, message and field)."""
    status = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
    violations = ((field, message),) if field else ()
    return _BY_CODE.get(status, GatewayError)(message, code=status, field=field, violations=violations,
                                               from_platform=True)


def from_rpc_error(exc: grpc.RpcError) -> GatewayError:
    """The typed error for a failed call (sync or asyncio), with the details the gateway attached."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else "") or str(code.name)
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    raw = next((value for key, value in (trailers or ()) if key == STATUS_DETAILS_KEY), None)
    violations: list[tuple[str, str]] = []
    resource = ("", "")
    if raw is not None:
        messages = _detail_messages()
        status = messages["Status"].FromString(raw)
        for detail in status.details:
            kind = detail.type_url.rsplit("/", 1)[-1]
            if kind == "google.rpc.BadRequest":
                violations += [(v.field, v.description)
                               for v in messages["BadRequest"].FromString(detail.value).field_violations]
            elif kind == "google.rpc.ResourceInfo":
                info = messages["ResourceInfo"].FromString(detail.value)
                resource = (info.resource_type, info.resource_name)
    cls = _BY_CODE.get(code, GatewayError)
    return cls(message, code=code, field=violations[0][0] if violations else "", violations=tuple(violations),
               resource=resource, from_platform=raw is not None)
