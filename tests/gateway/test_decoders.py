"""The spectra file formats the gateway reads, the errors for what it cannot read, and NumPy arrays
refused by their declared size before they are read."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from bench import bombs
from nanolens_formats.spectra import decode_spectra, parse_npy_header
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted

AXIS = np.linspace(100, 3000, 50)
SPECTRA = np.random.default_rng(0).random((4, 50)).astype(np.float32)


def npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_two_column_text_with_header():
    text = "shift\tcounts\n" + "\n".join(f"{x}\t{y}" for x, y in zip(AXIS, SPECTRA[0], strict=True))
    data = decode_spectra(text.encode(), "a.txt", {})
    np.testing.assert_allclose(data.spectra, SPECTRA[:1], rtol=1e-6)
    np.testing.assert_allclose(data.axis, AXIS)


def test_two_column_whitespace_without_header():
    text = "\n".join(f"{x}   {y}" for x, y in zip(AXIS, SPECTRA[1], strict=True))
    data = decode_spectra(text.encode(), "b.xy", {})
    assert data.spectra.shape == (1, 50)


def test_matrix_csv_with_wavenumber_header():
    rows = [",".join(map(str, AXIS))] + [",".join(map(str, row)) for row in SPECTRA]
    data = decode_spectra("\n".join(rows).encode(), "m.csv", {})
    np.testing.assert_allclose(data.spectra, SPECTRA, rtol=1e-6)
    np.testing.assert_allclose(data.axis, AXIS)


def test_npy_and_npz_with_axis():
    assert decode_spectra(npy(SPECTRA), "s.npy", {}).spectra.shape == (4, 50)
    data = decode_spectra(npz(spectra=SPECTRA, axis=AXIS), "s.npz", {})
    np.testing.assert_allclose(data.axis, AXIS)
    assert decode_spectra(npz(a=SPECTRA, b=SPECTRA), "s.npz", {"array_key": "b"}).spectra.shape == (4, 50)


def test_map_npy_header_is_enough_to_stream():
    cube = np.zeros((8, 6, 50), np.float32)
    layout = parse_npy_header(npy(cube)[:4096], "map.npy")
    assert layout.shape == (8, 6, 50) and layout.dtype == np.float32
    assert len(npy(cube)) == layout.data_offset + cube.nbytes


@pytest.mark.parametrize("data, key, message", [
    (b"", "x.csv", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "x.csv", "not UTF-8"),
    (b"1,2,3\n4,5\n", "x.csv", "different numbers of columns"),
    (b"1\t2\n3\tabc\n", "x.txt", "not a number"),
    (b"1\tnan\n2\t3\n", "x.txt", "NaN or Inf"),
    (b"name,other\nfoo,bar\n", "x.csv", "not a number"),
    (b"not a numpy file at all", "x.npy", "not a readable .npy"),
    (b"\x93NUMPY garbage", "x.npy", "not a readable .npy"),  # the magic, then no version numpy writes
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}    ", "x.npy", "not a readable .npy"),  # no shape
    (b"PK\x03\x04 broken zip", "x.npz", "not a readable .npz"),
    (b"1,2", "x.json", "unknown spectra format"),
    (b"3,1,2\n1,2,3\n", "x.csv", "not strictly monotonic"),
])
def test_bad_files_are_named(data, key, message):
    with pytest.raises(InvalidArgument, match=message) as info:
        decode_spectra(data, key, {})
    assert info.value.field == "input"


def test_object_arrays_are_refused_without_unpickling():
    with pytest.raises(InvalidArgument, match="pickle"):
        decode_spectra(npy(np.array([{"a": 1}], dtype=object)), "o.npy", {})


def peak_mib(work) -> float:
    """What Python and numpy allocate at most while ``work`` runs, MiB."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_arrays_declaring_more_than_a_decode_may_take_are_refused_before_they_are_read():
    def refuse(data, key, **limit):
        with pytest.raises(ResourceExhausted, match="declares a") as info:
            decode_spectra(data, key, {}, **limit)
        assert "bytes" in str(info.value)

    assert peak_mib(lambda: refuse(bombs.npy_declaring((100000, 100000)), "huge.npy")) < 1  # 80 GB declared
    bomb = bombs.npz(64 << 20)  # 64 MiB of float32 deflated into a few KiB
    assert len(bomb) < 256 << 10
    assert peak_mib(lambda: refuse(bomb, "bomb.npz", max_bytes=16 << 20)) < 4
    assert decode_spectra(bombs.npz(1 << 20), "fits.npz", {}).spectra.shape == (256, 1024)  # within: read


def test_arrays_shorter_than_their_header_says_are_refused_naming_it():
    with pytest.raises(InvalidArgument, match="ends after"):
        decode_spectra(npy(SPECTRA)[:-10], "cut.npy", {})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("spectra.npy", npy(SPECTRA)[:-10])
    with pytest.raises(InvalidArgument, match="member 'spectra' ends after"):
        decode_spectra(archive.getvalue(), "cut.npz", {})


def test_npz_with_several_arrays_needs_a_key():
    with pytest.raises(InvalidArgument, match="array_key"):
        decode_spectra(npz(a=SPECTRA, b=SPECTRA), "s.npz", {})
    with pytest.raises(InvalidArgument, match="no array 'c'"):
        decode_spectra(npz(a=SPECTRA, b=SPECTRA), "s.npz", {"array_key": "c"})


def test_fortran_order_maps_are_refused():
    with pytest.raises(InvalidArgument, match="Fortran order"):
        parse_npy_header(npy(np.asfortranarray(np.zeros((4, 4, 3), np.float32))), "f.npy")


def test_integer_and_string_dtypes():
    assert decode_spectra(npy(np.ones((2, 50), np.uint16)), "u.npy", {}).spectra.dtype == np.uint16
    with pytest.raises(InvalidArgument, match="must be numbers"):
        decode_spectra(npy(np.array([["a", "b"]])), "s.npy", {})


def test_zip_that_is_not_npz():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidArgument):
        decode_spectra(out.getvalue(), "z.npz", {})
