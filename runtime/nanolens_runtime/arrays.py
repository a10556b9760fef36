"""``nanolens.common.v1.NDArray`` <-> numpy, with the checks a caller's bytes deserve."""

from __future__ import annotations

import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens_runtime.errors import InvalidArgument

_TO_NUMPY = {
    common_pb2.DATA_TYPE_UINT8: np.dtype("<u1"),
    common_pb2.DATA_TYPE_UINT16: np.dtype("<u2"),
    common_pb2.DATA_TYPE_INT16: np.dtype("<i2"),
    common_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    common_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    common_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
}
_FROM_NUMPY = {dtype.newbyteorder("="): code for code, dtype in _TO_NUMPY.items()}


def proto_dtype(dtype: np.dtype) -> int | None:
    """The NDArray dtype for raw little-endian bytes of ``dtype``, or None if there is none."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
        return None
    return _FROM_NUMPY.get(dtype.newbyteorder("="))


def to_proto(array: np.ndarray) -> common_pb2.NDArray:
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _FROM_NUMPY:
        raise InvalidArgument(f"dtype {array.dtype} cannot be sent as an NDArray", field="dtype")
    little = np.ascontiguousarray(array, dtype=_TO_NUMPY[_FROM_NUMPY[native]])
    return common_pb2.NDArray(dtype=_FROM_NUMPY[native], shape=list(array.shape), data=little.tobytes())


def from_proto(message: common_pb2.NDArray, field: str = "array", finite: bool = True) -> np.ndarray:
    """A read-only view of the message's bytes; raises InvalidArgument naming ``field``."""
    if message.dtype not in _TO_NUMPY:
        raise InvalidArgument(f"{field}.dtype is unspecified or unknown ({message.dtype})", field=f"{field}.dtype")
    shape = tuple(message.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{field}.shape {list(shape)} has a negative dimension", field=f"{field}.shape")
    dtype = _TO_NUMPY[message.dtype]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(message.data) != expected:
        raise InvalidArgument(
            f"{field}.data holds {len(message.data)} bytes but shape {list(shape)} of {dtype.name} needs {expected}",
            field=f"{field}.data",
        )
    array = np.frombuffer(message.data, dtype=dtype).reshape(shape)
    if finite and array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise InvalidArgument(f"{field} contains NaN or Inf", field=field)
    return array


def require_micrograph_levels(image: np.ndarray, field: str, what: str = "") -> None:
    """Refuse an image with at most two grey levels: a blank frame or a mask sent as an image.
    Every thresholding method would fail on it or find nonsense, so it is the caller's error.
    Looks at a grid of about 256 x 256 pixels, so a huge image costs no full pass."""
    sample = image[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)]
    levels = np.unique(sample)
    if levels.size <= 2:
        raise InvalidArgument(f"{what or field} has only {levels.size} grey level(s) ({levels.tolist()}): "
                              "is it a mask or a blank frame rather than a micrograph?", field=field)
