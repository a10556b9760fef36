"""A minimal writer of Gatan DigitalMicrograph DM3/DM4 image files, for tests only.

Real DM files cannot be shipped with the repository (no licensed sample), so tests write their
own and read them with the gateway, which uses ncempy: an independent reader, so a wrong writer
fails the tests instead of agreeing with the reader.

Layout (Gatan tag file): a big-endian header (version, root length, byte order = 1 for
little-endian data), then the root tag group. A group is ``sorted, open`` (1 byte each) and a tag
count; an entry is ``20`` (group) or ``21`` (data), a 2-byte label length and the label; DM4
adds an 8-byte entry size before the group or the ``%%%%`` of a data entry. Data entries list
their type codes (big-endian, 4 bytes in DM3 and 8 in DM4) and then the values (little-endian).
"""

from __future__ import annotations

import struct

import numpy as np

# DM tag type codes and DM image data types
_LONG, _ULONG, _FLOAT, _ARRAY, _USHORT = 3, 5, 6, 20, 4
_IMAGE_TYPE = {np.dtype(np.int16): (1, 2), np.dtype(np.float32): (2, 6), np.dtype(np.uint8): (6, 10),
               np.dtype(np.int32): (7, 3), np.dtype(np.uint16): (10, 4), np.dtype(np.uint32): (11, 5)}
_RGBA_THUMBNAIL = 23


class _Writer:
    def __init__(self, version: int):
        self.version = version
        self.size = "Q" if version == 4 else "I"

    def _n(self, *values: int) -> bytes:
        return struct.pack(f">{len(values)}{self.size}", *values)

    def group(self, label: str, entries: list[bytes]) -> bytes:
        body = b"\x00\x01" + self._n(len(entries)) + b"".join(entries)
        name = label.encode("latin-1")
        head = b"\x14" + struct.pack(">H", len(name)) + name
        return head + (self._n(len(body)) if self.version == 4 else b"") + body

    def _data(self, label: str, info: list[int], payload: bytes) -> bytes:
        name = label.encode("latin-1")
        body = b"%%%%" + self._n(len(info)) + self._n(*info) + payload
        return b"\x15" + struct.pack(">H", len(name)) + name + (self._n(len(body)) if self.version == 4 else b"") + body

    def long(self, label: str, value: int) -> bytes:
        return self._data(label, [_LONG], struct.pack("<i", value))

    def ulong(self, label: str, value: int) -> bytes:
        return self._data(label, [_ULONG], struct.pack("<I", value))

    def float(self, label: str, value: float) -> bytes:
        return self._data(label, [_FLOAT], struct.pack("<f", value))

    def text(self, label: str, value: str) -> bytes:  # DM stores short strings as uint16 arrays
        return self._data(label, [_ARRAY, _USHORT, len(value)], value.encode("utf-16-le"))

    def array(self, label: str, element_type: int, values: np.ndarray) -> bytes:
        raw = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
        return self._data(label, [_ARRAY, element_type, values.size], raw)

    def image(self, data: np.ndarray, scales: tuple[float, float], units: tuple[str, str], data_type: int,
              element_type: int) -> bytes:
        """One ImageList entry; ``scales``/``units`` are (x, y), DM's order; a 3-D ``data`` (T, H, W)
        is a stack whose third dimension is calibrated as frames."""
        sizes = list(data.shape[::-1])  # DM lists x, y (, z)
        if data.ndim == 3:
            scales, units = (*scales, 1.0), (*units, "")
        dims = [self.group("", [self.float("Origin", 0.0), self.float("Scale", s), self.text("Units", u)])
                for s, u in zip(scales, units, strict=True)]
        image_data = self.group("ImageData", [
            self.group("Calibrations", [self.group("Dimension", dims)]),
            self.array("Data", element_type, data.ravel()),
            self.long("DataType", data_type),
            self.group("Dimensions", [self.ulong("", n) for n in sizes]),
        ])
        return self.group("", [image_data])


def dm_image(data: np.ndarray, scale: float | tuple[float, float] = 1.0, unit: str | tuple[str, str] = "nm", *,
             version: int = 3, thumbnail: bool = False) -> bytes:
    """DM3 (``version=3``) or DM4 bytes holding one 2D image (or a T x H x W stack) with a spatial calibration.

    ``scale``/``unit`` apply to both axes, or are ``(x, y)`` pairs. ``thumbnail`` puts a small RGBA
    preview first in the image list, as DigitalMicrograph does.
    """
    data = np.asarray(data)
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    units = unit if isinstance(unit, tuple) else (unit, unit)
    w = _Writer(version)
    data_type, element_type = _IMAGE_TYPE[data.dtype]
    images = []
    if thumbnail:
        preview = np.zeros((8, 8), np.uint32)
        images.append(w.image(preview, (1.0, 1.0), ("", ""), _RGBA_THUMBNAIL, _ULONG))
    images.append(w.image(data, scales, units, data_type, element_type))
    root_body = b"\x01\x01" + w._n(1) + w.group("ImageList", images)
    header = struct.pack(">I", version) + w._n(len(root_body) + 8) + struct.pack(">I", 1)
    return header + root_body + b"\x00" * 8
