"""Decoders for the spectra files scientists actually have.

- two-column text/CSV: ``x, intensity`` per line (an optional text header line);
- multi-spectrum CSV matrix: first row the x axis (wavenumbers), then one spectrum per row;
- NumPy ``.npy`` (N x C or C) and ``.npz`` (``spectra`` [+ ``axis``], or one array, or
  the array named by the ``array_key`` option);
- spectral maps: H x W x C arrays in ``.npy``/``.npz``. ``.npy`` maps are read in
  row blocks from one streaming GET, so a 256 MiB map never sits in one message or buffer.

Every failure is an ``InvalidArgument`` naming the problem and the field ``input``.
"""

from __future__ import annotations

import ast
import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from nanolens_runtime.errors import InvalidArgument

TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".dat", ".xy", ".asc"}
NUMPY_SUFFIXES = {".npy", ".npz"}


@dataclass(frozen=True)
class SpectraData:
    spectra: np.ndarray  # N x C (or H x W x C for maps)
    axis: np.ndarray | None  # C, or None: already on the model's axis


@dataclass(frozen=True)
class NpyLayout:
    """Where the numbers of a ``.npy`` file are: enough to read row blocks by range."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


def suffix_of(key: str) -> str:
    return PurePosixPath(key).suffix.lower()


def _check_numeric(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise _bad(f"{what} has dtype {array.dtype}; spectra must be numbers")
    if array.size == 0:
        raise _bad(f"{what} is empty")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _bad(f"{what} contains NaN or Inf")
    return array


def _check_axis(axis: np.ndarray | None, channels: int, what: str) -> np.ndarray | None:
    if axis is None:
        return None
    axis = np.asarray(axis, dtype=np.float64).ravel()
    if axis.size != channels:
        raise _bad(f"{what}: axis has {axis.size} values but spectra have {channels} channels")
    if not np.isfinite(axis).all():
        raise _bad(f"{what}: axis contains NaN or Inf")
    steps = np.diff(axis)
    if not ((steps > 0).all() or (steps < 0).all()):
        raise _bad(f"{what}: axis is not strictly monotonic")
    return axis


# -- text ------------------------------------------------------------------------------
def _rows(text: str) -> list[list[str]]:
    sample = "\n".join(text.splitlines()[:20])
    delimiter = None
    for candidate in (",", "\t", ";"):
        if candidate in sample:
            delimiter = candidate
            break
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split()
        rows.append([f.strip() for f in fields if f.strip() != ""])
    return rows


def _floats(row: list[str], line: int, what: str) -> list[float]:
    try:
        return [float(v) for v in row]
    except ValueError as exc:
        raise _bad(f"{what}: line {line} has a value that is not a number ({exc})") from exc


def decode_text(data: bytes, what: str) -> SpectraData:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(f"{what} is not UTF-8 text; is it a binary file with a text extension?") from exc
    rows = _rows(text)
    if not rows:
        raise _bad(f"{what} holds no data rows")
    header: list[str] | None = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        header, rows = rows[0], rows[1:]
    if not rows:
        raise _bad(f"{what} has a header but no data rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        line = next(i for i, r in enumerate(rows, start=2 if header else 1) if len(r) != len(rows[0]))
        raise _bad(f"{what}: rows have different numbers of columns (first odd one: data line {line})")
    width = widths.pop()
    if width == 2:  # x, intensity (a 2-channel matrix would make no sense)
        table = np.array([_floats(r, i, what) for i, r in enumerate(rows, 1)])
        return SpectraData(_check_numeric(table[:, 1][None, :], what),
                           _check_axis(table[:, 0], len(table), what))
    if header is not None:
        raise _bad(f"{what}: a multi-spectrum CSV needs the x axis (numbers) as its first row, "
                   f"found text {header[:3]}")
    if len(rows) < 2:
        raise _bad(f"{what}: one row of {width} numbers is neither a two-column spectrum nor a matrix "
                   "with an axis row")
    axis = np.array(_floats(rows[0], 1, what))
    matrix = np.array([_floats(r, i, what) for i, r in enumerate(rows[1:], 2)])
    return SpectraData(_check_numeric(matrix, what), _check_axis(axis, matrix.shape[1], what))


# -- numpy -----------------------------------------------------------------------------
def _load_npy(data: bytes, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _bad(f"{what} is not a readable .npy file ({exc})") from exc


def decode_numpy(data: bytes, suffix: str, what: str, options: dict[str, str]) -> SpectraData:
    if suffix == ".npy":
        return SpectraData(_check_numeric(_load_npy(data, what), what), None)
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(f"{what} is not a readable .npz file ({exc})") from exc
    with archive:
        names = list(archive.files)
        key = options.get("array_key") or ("spectra" if "spectra" in names else (names[0] if len(names) == 1 else ""))
        if not key:
            raise _bad(f"{what} holds arrays {names}; say which with the option array_key")
        if key not in names:
            raise _bad(f"{what} has no array {key!r} (it has {names})")
        try:
            spectra = archive[key]
            axis = archive["axis"] if "axis" in names and key != "axis" else None
        except ValueError as exc:  # object arrays need pickle, which we never allow
            raise _bad(f"{what}: array {key!r} cannot be read without pickle ({exc})") from exc
    if not isinstance(spectra, np.ndarray) or (axis is not None and not isinstance(axis, np.ndarray)):
        raise _bad(f"{what}: member {key!r} is not a .npy array; is this a zip but not an .npz?")
    spectra = _check_numeric(spectra, what)
    return SpectraData(spectra, _check_axis(axis, spectra.shape[-1], what))


def decode_spectra(data: bytes, key: str, options: dict[str, str]) -> SpectraData:
    """Decode a whole file into spectra (N x C, or C) or a map (H x W x C)."""
    suffix = suffix_of(key)
    what = f"input {key!r}"
    if not data:
        raise _bad(f"{what} is empty (0 bytes)")
    if suffix in NUMPY_SUFFIXES:
        return decode_numpy(data, suffix, what, options)
    if suffix in TEXT_SUFFIXES:
        return decode_text(data, what)
    raise _bad(f"{what}: unknown spectra format {suffix or '(no extension)'}; "
               f"use one of {sorted(TEXT_SUFFIXES | NUMPY_SUFFIXES)}")


def parse_npy_header(prefix: bytes, what: str) -> NpyLayout:
    """Shape, dtype and data offset from the first bytes of a ``.npy`` file."""
    stream = io.BytesIO(prefix)
    try:
        major, _minor = np.lib.format.read_magic(stream)
        header_len_size = 2 if major == 1 else 4
        header_len = int.from_bytes(prefix[8:8 + header_len_size], "little")
        offset = 8 + header_len_size + header_len
        if len(prefix) < offset:
            raise ValueError("header longer than the bytes read")
        header = ast.literal_eval(prefix[8 + header_len_size:offset].decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape = tuple(int(d) for d in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise _bad(f"{what} is not a readable .npy file ({exc})") from exc
    if fortran:
        raise _bad(f"{what} is stored in Fortran order; save maps in C order (numpy's default)")
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise _bad(f"{what} has dtype {dtype}; spectra must be numbers")
    return NpyLayout(shape, dtype, offset)
