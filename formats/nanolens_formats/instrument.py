"""What a micrograph file says of how it was taken, beyond its pixel size and detector (which
:func:`nanolens_formats.images.decode_image` reads): the magnification and the acquisition date, for
searching collections by them. FEI/Thermo and Zeiss SmartSEM TIFFs say both; any TIFF may carry
the standard DateTime tag; other formats say neither here.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

import tifffile

_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ZEISS_MAG = re.compile(r"^\s*([0-9.]+)\s*(k?)\s*x\s*$", re.IGNORECASE)


def _date(text, *formats: str) -> str | None:
    for f in formats:
        try:
            return datetime.strptime(str(text).strip(), f).date().isoformat()
        except ValueError:
            continue
    return None


def _value(entry) -> str:
    """A Zeiss entry's value as written: tifffile gives (label, value) or (label, number, unit)."""
    return " ".join(str(v) for v in entry[1:]) if isinstance(entry, tuple | list) else str(entry)


def acquisition(data: bytes) -> dict:
    """``{"magnification": float or None, "acquired": "YYYY-MM-DD" or None}`` from the file's bytes.
    FEI's magnification is its display width over the horizontal field width, as its software shows it."""
    out = {"magnification": None, "acquired": None}
    if data[:4] not in _TIFF:
        return out
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if tif.is_fei and tif.fei_metadata:
                meta = tif.fei_metadata
                out["acquired"] = _date(meta.get("User", {}).get("Date", ""), "%m/%d/%Y")
                canvas = meta.get("Image", {}).get("MagCanvasRealWidth")
                field = meta.get("EScan", {}).get("HorFieldsize") or meta.get("EBeam", {}).get("HFW")
                if isinstance(canvas, float | int) and isinstance(field, float | int) and field > 0 and canvas > 0:
                    out["magnification"] = round(canvas / field, 3)
            elif tif.is_sem and tif.sem_metadata:
                meta = tif.sem_metadata
                out["acquired"] = _date(_value(meta.get("ap_date", "")), "%d %b %Y")
                match = _ZEISS_MAG.match(_value(meta.get("ap_mag", "")))
                if match:
                    out["magnification"] = float(match[1]) * (1000 if match[2] else 1)
            tag = tif.pages[0].tags.get(306)  # DateTime, "YYYY:MM:DD HH:MM:SS"
            if out["acquired"] is None and tag is not None:
                out["acquired"] = _date(tag.value, "%Y:%m:%d %H:%M:%S")
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError):
        pass  # decode_image says what is wrong with a broken file; here it only has no metadata
    return out
