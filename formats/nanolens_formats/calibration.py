"""The pixel size a file states, read one way for every image and movie reader.

TIFF (first match wins): FEI/Thermo ``[Scan] PixelWidth``; Zeiss SmartSEM (``CZ_SEM``) field
width over the stored columns; DigitalMicrograph's private tags; Olympus SIS ``pixelsizex``;
ImageJ's calibration (``XResolution`` pixels per ``unit``). DM3/DM4 files give their axes'
calibration to :func:`square_pixel_nm`. :data:`SOURCES` are the names results report.
"""

from __future__ import annotations

import re

import tifffile

#: where a pixel size can come from, as results name it ("request" and "scale bar" are the
#: callers'; "unknown" when none)
SOURCES = ("FEI", "Zeiss", "DigitalMicrograph", "Olympus", "ImageJ")

# nm per length unit, as ImageJ, Zeiss, DigitalMicrograph and scale-bar labels write them. Micro
# comes as MICRO SIGN, Greek mu, "u" or ImageJ's escaped "\u00B5"; angstrom as A-ring, ANGSTROM SIGN,
# "A" or ImageJ's "\u00C5". Keys are lower case, micro and angstrom already folded (see nm_per).
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
            "um": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
            "micrometers": 1e3, "micrometres": 1e3,
            "mm": 1e6, "m": 1e9, "pm": 1e-3, "a": 0.1, "angstrom": 0.1, "angstroms": 0.1}
_MICRO = re.compile(r"\\u00b5|\\u03bc|[\u00b5\u03bc]")
_ANGSTROM = re.compile(r"\\u00c5|\\u212b|[\u00c5\u212b\u00e5]")


def nm_per(unit: object) -> float | None:
    """Nanometres per one ``unit`` of length (nm, µm, um, micron, Å, ...), None for an unknown,
    empty or non-length unit (pixel, inch: a print resolution, not the specimen's)."""
    text = _ANGSTROM.sub("a", _MICRO.sub("u", str(unit).strip().lower()))
    return _UNIT_NM.get(text)


def length_nm(value: object, unit: object) -> float | None:
    """``value`` ``unit`` in nm, None unless a positive finite length."""
    per = nm_per(unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * per if per and 0 < number < float("inf") else None


def square_pixel_nm(x: float | None, y: float | None) -> float | None:
    """One pixel size from the x and y calibrations in nm (either may be None: not a length).

    Raises ``ValueError`` when they differ by more than 1 %: sizes need square pixels."""
    if x is None or y is None:
        return x if y is None else y
    if abs(x - y) > 0.01 * x:
        raise ValueError(f"non-square pixels ({x:.4g} x {y:.4g} nm)")
    return x


def _zeiss_length_nm(entry: object) -> float | None:
    """A SmartSEM ("Name", value, unit) length in nm, or None."""
    if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[1], int | float):
        return length_nm(entry[1], entry[2])
    return None


def _zeiss(meta: dict, columns: int) -> float | None:
    """Zeiss SmartSEM's pixel size: the field width (``AP_WIDTH``) over the columns stored.

    ``AP_PIXEL_SIZE`` is the pixel size of the scan, which is not the stored image's when the image
    was saved at another resolution than it was scanned (a 1024-column scan saved as 512 columns
    keeps the 1024-column pixel size: every size from it would be half the truth). The field
    width belongs to the specimen, so it divided by the columns actually stored is right whatever
    the saved resolution; ``AP_PIXEL_SIZE`` is used only when the file gives no width.
    """
    width_nm = _zeiss_length_nm(meta.get("ap_width"))
    if width_nm and columns > 0:
        return width_nm / columns
    return _zeiss_length_nm(meta.get("ap_pixel_size")) or _zeiss_length_nm(meta.get("ap_image_pixel_size"))


def _digitalmicrograph(tags) -> float | None:
    """DigitalMicrograph's calibration in a TIFF it saved: private tags 65009 / 65010 (x / y scale
    per pixel) with units 65003 / 65004; the standard resolution tags of such files are not the
    calibration. Square pixels only."""
    scales = [tags.get(code) for code in (65009, 65010)]
    units = [tags.get(code) for code in (65003, 65004)]
    if None in scales or None in units:
        return None
    x, y = (length_nm(s.value, u.value) for s, u in zip(scales, units, strict=True))
    if x is None or y is None:
        return None
    try:
        return square_pixel_nm(x, y)
    except ValueError:
        return None


def _olympus(tags) -> float | None:
    """Olympus SIS (cellSens, iTEM): the private tag 33560's ``pixelsizex``, in metres."""
    tag = tags.get(33560)
    meta = tag.value if tag is not None and isinstance(tag.value, dict) else {}
    return length_nm(meta.get("pixelsizex"), "m")


def _imagej(tif: tifffile.TiffFile, page) -> float | None:
    """ImageJ's calibration: ``XResolution`` is pixels per ``unit`` of the description."""
    meta = tif.imagej_metadata if tif.is_imagej else None
    x_res = page.tags.get("XResolution")
    if not meta or x_res is None:
        return None
    numerator, denominator = x_res.value
    return length_nm(denominator / numerator, meta.get("unit", "")) if numerator > 0 else None


def tiff_pixel_size(tif: tifffile.TiffFile, page, columns: int) -> tuple[float | None, str]:
    """The pixel size in nm a TIFF states and its source (one of :data:`SOURCES`), or (None, "").

    ``page`` is the page holding the image (Olympus SIS keeps a colour rendering first);
    ``columns`` the stored image's width (Zeiss gives the field width)."""
    if tif.is_fei and tif.fei_metadata:
        nm = length_nm(tif.fei_metadata.get("Scan", {}).get("PixelWidth"), "m")
        if nm:
            return nm, "FEI"
    if tif.is_sem and tif.sem_metadata:
        nm = _zeiss(tif.sem_metadata, columns)
        if nm:
            return nm, "Zeiss"
    for read, source in ((_digitalmicrograph, "DigitalMicrograph"), (_olympus, "Olympus")):
        nm = read(tif.pages[0].tags) or read(page.tags)
        if nm:
            return nm, source
    nm = _imagej(tif, tif.pages[0])
    return (nm, "ImageJ") if nm else (None, "")
