"""Magnification and acquisition date from micrograph files (nanolens_formats.instrument), for
searching SEM collections by them: FEI/Thermo and Zeiss metadata, the TIFF DateTime tag, none from
other formats, and hyperspy's real instrument TIFFs when `make tools` unpacked them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from hyperspy_files import FOLDER, SKIP

from nanolens_formats.instrument import acquisition

IMAGE = np.zeros((32, 32), np.uint8)


def tiff(**arguments) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, IMAGE, photometric="minisblack", **arguments)
    return out.getvalue()


@pytest.mark.parametrize("data, expected", [
    (tiff(extratags=[(34682, "s", 0, "[User]\r\nDate=06/13/2016\r\n[Image]\r\nMagCanvasRealWidth=0.2072\r\n"
                      "[EScan]\r\nHorFieldsize=0.00172667\r\n[System]\r\nType=SEM\r\n", True)]),
     {"magnification": 120.0, "acquired": "2016-06-13"}),
    (tiff(extratags=[(34118, "s", 0, b"0\r\n0\r\nAP_MAG\r\nMag = 25.00 K X\r\nAP_DATE\r\nDate = 25 Sep 2018\r\n",
                      True)]), {"magnification": 25000.0, "acquired": "2018-09-25"}),
    (tiff(extratags=[(34118, "s", 0, b"0\r\n0\r\nAP_MAG\r\nMag = 800 X\r\n", True)]),
     {"magnification": 800.0, "acquired": None}),
    (tiff(datetime="2021:03:04 10:11:12"), {"magnification": None, "acquired": "2021-03-04"}),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), {"magnification": None, "acquired": None}),
    (b"II*\x00 a broken TIFF", {"magnification": None, "acquired": None}),
], ids=["FEI", "Zeiss", "Zeiss-no-date", "DateTime", "PNG", "broken"])
def test_magnification_and_date(data, expected):
    assert acquisition(data) == expected


@pytest.mark.skipif(not FOLDER.exists(), reason=SKIP)
@pytest.mark.parametrize("name, expected", [
    ("tiff_FEI_Helios/FEI-Helios-Ebeam-8bits.tif", {"magnification": 120.0, "acquired": "2016-06-13"}),
    ("tiff_Zeiss_SEM/test_tiff_Zeiss_SEM_512pix.tif", {"magnification": 50000.0, "acquired": "2018-09-25"}),
])
def test_real_instrument_files(name, expected):
    assert acquisition((FOLDER / name).read_bytes()) == expected
