"""Decompression bombs: small files that declare (and, deflated, hold) far more than they weigh.

Each is built without the memory or the time of what it inflates to: deflate output after a full
flush does not depend on what came before, so one compressed block of zeros is repeated as often
as needed. The gateway must refuse every one by the size it declares, before decoding it (issue 35:
a 490 KB PNG inflated to 1.6 GiB in the gateway, a 1 MB .npz to 1.28 GiB).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_BLOCK = 4 << 20


def _deflated_zeros(n: int, head: bytes = b"") -> bytes:
    """A raw deflate stream of ``head`` and then ``n`` zero bytes."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH) if head else b""
    whole, rest = divmod(n, _BLOCK)
    block = deflate.compress(bytes(_BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH) if whole else b""
    return start + block * whole + deflate.compress(bytes(rest)) + deflate.flush(zlib.Z_FINISH)


def _crc32_zeros(n: int, crc: int) -> int:
    zeros = bytes(_BLOCK)
    for start in range(0, n, _BLOCK):
        crc = zlib.crc32(zeros[:min(_BLOCK, n - start)], crc)
    return crc


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, channels: int = 3, rows: int | None = None) -> bytes:
    """A black 8-bit PNG of ``width`` x ``height``; only its first ``rows`` rows are stored when
    given (a header that declares more than the file holds)."""
    colour = {1: 0, 3: 2, 4: 6}[channels]
    n = (1 + width * channels) * (height if rows is None else rows)  # a filter byte (0: none) per row
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes
    idat = b"\x78\xda" + _deflated_zeros(n) + struct.pack(">I", adler)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def tiff(width: int, height: int, dtype=np.uint16, tile: int = 1024) -> bytes:
    """A zlib-compressed tiled TIFF of zeros (the same encoded tile written as every tile)."""
    import tifffile

    encoded = zlib.compress(np.zeros((tile, tile), dtype).tobytes(), 9)
    tiles = ((height + tile - 1) // tile) * ((width + tile - 1) // tile)
    out = io.BytesIO()
    tifffile.imwrite(out, (encoded for _ in range(tiles)), shape=(height, width), dtype=dtype, tile=(tile, tile),
                     compression="zlib")
    return out.getvalue()


def npy_declaring(shape: tuple[int, ...], dtype=np.float64) -> bytes:
    """A .npy header declaring ``shape`` of ``dtype``, followed by a few bytes of data only."""
    out = io.BytesIO()
    np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return out.getvalue() + bytes(64)


def npz(nbytes: int, name: str = "spectra", columns: int = 1024) -> bytes:
    """A .npz whose one deflated member (float32 zeros, ``columns`` wide) inflates to about
    ``nbytes`` (under 4 GiB: no zip64)."""
    rows = max(1, nbytes // (4 * columns))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, columns)})
    head, zeros = header.getvalue(), rows * columns * 4
    data = _deflated_zeros(zeros, head)
    crc, size, member = _crc32_zeros(zeros, zlib.crc32(head)), len(head) + zeros, f"{name}.npy".encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(member), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                          len(member), 0, 0, 0, 0, 0, 0)
    directory = central + member
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(local) + len(member) + len(data), 0)
    return local + member + data + directory + end
