"""Decoders for the spectra files scientists actually have.

- text: two columns (``x, intensity``), a CSV matrix (first row the axis, one spectrum per row),
  and the vendor text exports of B&W Tek, Horiba LabSpec, Renishaw WiRE and WITec
  (``nanolens_formats.spectra_text``);
- NumPy ``.npy`` (N x C or C) and ``.npz`` (``spectra`` [+ ``axis``], or one array, or
  the array named by the ``array_key`` option);
- spectral maps: H x W x C arrays in ``.npy``/``.npz``. ``.npy`` maps are read in
  row blocks from one streaming GET, so a 256 MiB map never sits in one message or buffer.

Every failure is an ``InvalidArgument`` naming the problem and the field ``input``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from nanolens_formats.files import suffix_of
from nanolens_formats.npy import npz_members, npz_names, read_header, read_npy, read_npz_member
from nanolens_formats.spectra_text import SUPPORTED, VENDOR_SUFFIXES, binary_error, read_text_spectra
from nanolens_runtime.errors import InvalidArgument

TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".dat", ".xy", ".asc"}
NUMPY_SUFFIXES = {".npy", ".npz"}


@dataclass(frozen=True)
class SpectraData:
    spectra: np.ndarray  # N x C (or H x W x C for maps)
    axis: np.ndarray | None  # C, or None: already on the model's axis
    format: str = ""  # the layout read, e.g. "B&W Tek text export (...)"
    grid: tuple[int, int] | None = None  # (rows, columns) when the N spectra of a text file are a raster map


@dataclass(frozen=True)
class NpyLayout:
    """Where the numbers of a ``.npy`` file are: enough to read row blocks by range."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


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
def decode_text(data: bytes, what: str, suffix: str = "") -> SpectraData:
    """Any text layout ``nanolens_formats.spectra_text`` reads (vendor exports included)."""
    read = read_text_spectra(data, what, suffix)
    spectra = _check_numeric(read.spectra, what)
    return SpectraData(spectra, _check_axis(read.axis, spectra.shape[-1], what), read.format, read.grid)


# -- numpy -----------------------------------------------------------------------------
# The most one decoded input may take in memory: a .npz member that inflates past it is refused
# before it is read (larger maps go as .npy, which is streamed in row blocks).
MAX_DECODED_BYTES = 512 << 20


def decode_numpy(data: bytes, suffix: str, what: str, options: dict[str, str],
                 max_bytes: int = MAX_DECODED_BYTES) -> SpectraData:
    if suffix == ".npy":
        return SpectraData(_check_numeric(read_npy(io.BytesIO(data), what, max_bytes), what), None)
    with npz_members(data, what) as archive:
        names = npz_names(archive)
        key = options.get("array_key") or ("spectra" if "spectra" in names else (names[0] if len(names) == 1 else ""))
        if not key:
            raise _bad(f"{what} holds arrays {names}; say which with the option array_key")
        if key not in names:
            raise _bad(f"{what} has no array {key!r} (it has {names})")
        spectra = read_npz_member(archive, key, what, max_bytes)
        axis = read_npz_member(archive, "axis", what, max_bytes) if "axis" in names and key != "axis" else None
    spectra = _check_numeric(spectra, what)
    return SpectraData(spectra, _check_axis(axis, spectra.shape[-1], what))


def decode_spectra(data: bytes, key: str, options: dict[str, str], max_bytes: int = MAX_DECODED_BYTES) -> SpectraData:
    """Decode a whole file into spectra (N x C, or C) or a map (H x W x C); a NumPy array declaring
    more than ``max_bytes`` is refused before it is read."""
    suffix = suffix_of(key)
    what = f"input {key!r}"
    if not data:
        raise _bad(f"{what} is empty (0 bytes)")
    if suffix in NUMPY_SUFFIXES:
        data_ = decode_numpy(data, suffix, what, options, max_bytes)
        return SpectraData(data_.spectra, data_.axis, f"NumPy {suffix}")
    if suffix in TEXT_SUFFIXES:
        return decode_text(data, what, suffix)
    if suffix in VENDOR_SUFFIXES:
        raise binary_error(what, data, suffix)
    raise _bad(f"{what}: unknown spectra format {suffix or '(no extension)'}; "
               f"use one of {sorted(TEXT_SUFFIXES | NUMPY_SUFFIXES)} holding one of: {SUPPORTED}")


def parse_npy_header(prefix: bytes, what: str) -> NpyLayout:
    """Shape, dtype and data offset from the first bytes of a ``.npy`` file."""
    shape, dtype, fortran, offset = read_header(io.BytesIO(prefix), what)
    if fortran:
        raise _bad(f"{what} is stored in Fortran order; save maps in C order (numpy's default)")
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise _bad(f"{what} has dtype {dtype}; spectra must be numbers")
    return NpyLayout(shape, dtype, offset)
