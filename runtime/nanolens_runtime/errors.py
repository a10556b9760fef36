"""Domain exceptions and the one place where they become gRPC status codes.

Science and storage code raise these; the error interceptor (``interceptors.py``)
turns them into a status with rich details (``google.rpc.BadRequest`` naming the
field for INVALID_ARGUMENT). Anything else is a bug: INTERNAL with a generic
message, traceback in the log only.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


class NanoLensError(Exception):
    """Base of all errors a caller is allowed to see."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def details(self) -> list:
        """Protobuf detail messages attached to the status."""
        return []


class InvalidArgument(NanoLensError):
    """The request (or the data it points at) is malformed; ``field`` names what is wrong."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field

    def details(self) -> list:
        violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
        return [error_details_pb2.BadRequest(field_violations=[violation])]


class NotFound(NanoLensError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, message: str, resource_type: str = "", resource_name: str = ""):
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list:
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=self.resource_name, description=self.message
            )
        ]


class AlreadyExists(NanoLensError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(NanoLensError):
    """Not ready yet, or draining."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(NanoLensError):
    """Overload, or input larger than a configured limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(NanoLensError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(NanoLensError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(NanoLensError):
    """The system is not in a state to do this (a feature switched off, a missing configuration)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(NanoLensError):
    """The caller is known but its token does not allow this action on this object."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(NanoLensError):
    """The work was done but cannot be kept (e.g. a service ran another model than the one asked
    for, as an old replica during a rolling upgrade may); retrying is safe."""

    code = grpc.StatusCode.ABORTED


class InvalidModelBundle(NanoLensError):
    """A bundle failed verification (bad manifest, wrong sha256). Refuse to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


INTERNAL_MESSAGE = "internal error; the server log has the details"


def to_rpc_status(error: NanoLensError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for a domain error, details packed as ``Any``."""
    packed = []
    for detail in error.details():
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(
        code=getattr(code_pb2, error.code.name), message=error.message, details=packed
    )


# Go's spelling of each code, as go-grpc-prometheus labels them ("InvalidArgument").
GO_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"
