"""NumPy ``.npy`` arrays and ``.npz`` members read with their declared size checked first.

``np.load`` allocates the array its header declares before reading a byte of data, so a few
bytes declaring 100,000 x 100,000 float64 (or a deflated ``.npz`` member that inflates to
gigabytes) take the memory before anything can refuse them. Here the header is read first and an
array larger than the caller's limit is RESOURCE_EXHAUSTED; the data is then read into the array
as it arrives, so a file holding less than it declares costs no more than it holds.
"""

from __future__ import annotations

import ast
import io
import math
import zipfile

import numpy as np

from nanolens_runtime.errors import InvalidArgument, ResourceExhausted

_MAX_HEADER = 65536  # numpy writes headers of a few hundred bytes


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


def read_header(stream, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Shape, dtype, Fortran order and data offset of the ``.npy`` stream at its start (versions
    1.0 to 3.0); the stream is left at the data."""
    try:
        magic = stream.read(8)
        if len(magic) < 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
            raise ValueError("it does not start with the .npy magic of version 1, 2 or 3")
        size_len = 2 if magic[6] == 1 else 4
        header_len = int.from_bytes(stream.read(size_len), "little")
        if header_len > _MAX_HEADER:
            raise ValueError(f"a header of {header_len} bytes")
        text = stream.read(header_len)
        if len(text) < header_len:
            raise ValueError("it ends inside its header")
        header = ast.literal_eval(text.decode("utf-8" if magic[6] == 3 else "latin1"))
        shape, fortran = header["shape"], header["fortran_order"]
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"shape {shape!r}")
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise _bad(f"{what} is not a readable .npy file ({exc})") from exc
    return shape, dtype, bool(fortran), 8 + size_len + header_len


def read_npy(stream, what: str, max_bytes: int) -> np.ndarray:
    """The array of a ``.npy`` stream (file-like), refused before allocation above ``max_bytes``."""
    shape, dtype, fortran, _ = read_header(stream, what)
    if dtype.hasobject:
        raise _bad(f"{what} holds Python objects ({dtype}); they need pickle, which is never allowed")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise ResourceExhausted(f"{what} declares a {' x '.join(map(str, shape))} {dtype} array ({nbytes} bytes), "
                                f"above the {max_bytes} bytes one decoded input may take")
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = memoryview(array.reshape(-1, order="A").view(np.uint8)) if nbytes else memoryview(b"")
    filled = 0
    while filled < nbytes:  # pages of the array are touched only as data arrives
        got = stream.readinto(view[filled:])
        if not got:
            raise _bad(f"{what} ends after {filled} of the {nbytes} bytes of data its header declares")
        filled += got
    return array


def npz_members(data: bytes, what: str) -> zipfile.ZipFile:
    """The zip archive of an ``.npz`` (its ``.npy`` members read with :func:`read_npz_member`)."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _bad(f"{what} is not a readable .npz file ({exc})") from exc


def npz_names(archive: zipfile.ZipFile) -> list[str]:
    """The arrays of an ``.npz``, as ``np.load`` names them (the member names without ``.npy``)."""
    return [name.removesuffix(".npy") for name in archive.namelist()]


def read_npz_member(archive: zipfile.ZipFile, name: str, what: str, max_bytes: int) -> np.ndarray:
    member = name if name in archive.namelist() else f"{name}.npy"
    where = f"{what} member {name!r}"
    try:
        with archive.open(member) as stream:
            return read_npy(stream, where, max_bytes)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise _bad(f"{where} cannot be read ({type(exc).__name__}: {exc})") from exc
