"""One pixel-size reader for images and movies: every unit and vendor a file states its pixel
size in gives the same size and source to the image decoder and the movie reader."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from hyperspy_files import FOLDER as HYPERSPY
from hyperspy_files import SKIP as NO_HYPERSPY

from dmfile import dm_image
from nanolens_formats.calibration import nm_per
from nanolens_formats.images import decode_image
from nanolens_formats.movies import open_movie
from support import data_dir

LIMIT = 4096 * 4096
FRAMES = np.random.default_rng(0).integers(0, 255, (3, 48, 64), dtype=np.uint8)


def imagej(unit: str, pixels_per_unit: float) -> dict:
    return {"imagej": True, "resolution": (pixels_per_unit, pixels_per_unit), "metadata": {"unit": unit}}


def fei(pixel_m: str) -> dict:
    text = f"[Scan]\r\nPixelWidth={pixel_m}\r\n[System]\r\nType=SEM\r\n"
    return {"photometric": "minisblack", "extratags": [(34682, "s", 0, text, True)]}


def zeiss(width: str) -> dict:
    text = f"0\r\n0\r\nAP_WIDTH\r\nWidth = {width}\r\nAP_PIXEL_SIZE\r\nPixel Size = 1 nm\r\n"
    return {"photometric": "minisblack", "extratags": [(34118, "s", 0, text.encode("latin-1"), True)]}


def dm_tiff(scale: float, unit: str) -> dict:
    unit = unit.encode("latin-1")  # the micro sign as one byte, as DigitalMicrograph writes it
    return {"photometric": "minisblack", "extratags": [(65003, "s", 0, unit, True), (65004, "s", 0, unit, True),
                          (65009, "d", 1, scale, True), (65010, "d", 1, scale, True)]}


# (how the TIFF is written, the pixel size in nm it states, its source). ImageJ writes ASCII
# descriptions: the micro sign as "micron" or the escape \u00B5, the angstrom as \u00C5.
CASES = {
    "ImageJ nm": (imagej("nm", 0.4), 2.5, "ImageJ"),
    "ImageJ nanometer": (imagej("nanometer", 0.4), 2.5, "ImageJ"),
    "ImageJ micron": (imagej("micron", 400.0), 2.5, "ImageJ"),
    "ImageJ microns": (imagej("microns", 400.0), 2.5, "ImageJ"),
    "ImageJ um": (imagej("um", 400.0), 2.5, "ImageJ"),
    "ImageJ escaped micro sign": (imagej("\\u00B5m", 400.0), 2.5, "ImageJ"),
    "ImageJ escaped Greek mu": (imagej("\\u03BCm", 400.0), 2.5, "ImageJ"),
    "ImageJ escaped angstrom": (imagej("\\u00C5", 0.04), 2.5, "ImageJ"),
    "ImageJ A": (imagej("A", 0.04), 2.5, "ImageJ"),
    "ImageJ mm": (imagej("mm", 4e5), 2.5, "ImageJ"),
    "FEI/Thermo PixelWidth": (fei("2.5e-09"), 2.5, "FEI"),
    "Zeiss field width in micro sign": (zeiss("0.16 \xb5m"), 2.5, "Zeiss"),  # 160 nm over 64 columns
    "Zeiss field width in nm": (zeiss("160 nm"), 2.5, "Zeiss"),
    "DigitalMicrograph tags": (dm_tiff(0.0025, "µm"), 2.5, "DigitalMicrograph"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_images_and_movies_read_the_same_pixel_size(case, tmp_path):
    kwargs, nm, source = CASES[case]
    one = io.BytesIO()
    tifffile.imwrite(one, FRAMES[0], **kwargs)
    decoded = decode_image(one.getvalue(), "a.tif", LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(nm, rel=1e-4) and decoded.pixel_size_source == source
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, FRAMES, **kwargs)
    movie = open_movie(path, "m.tif")
    try:
        assert movie.n_frames == 3
        assert movie.pixel_size_nm == pytest.approx(nm, rel=1e-4) and movie.pixel_size_source == source
    finally:
        movie.close()


@pytest.mark.parametrize("unit", ["pixel", "inch", "", "furlong"])
def test_units_that_are_not_a_specimen_length_give_no_pixel_size(unit, tmp_path):
    """ImageJ's "pixel" (uncalibrated) and "inch" (a print resolution) say nothing about the specimen."""
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, FRAMES, **imagej(unit, 72.0))
    movie = open_movie(path, "m.tif")
    movie.close()
    assert movie.pixel_size_nm == 0.0 and movie.pixel_size_source == ""
    one = io.BytesIO()
    tifffile.imwrite(one, FRAMES[0], **imagej(unit, 72.0))
    image = decode_image(one.getvalue(), "a.tif", LIMIT)
    assert image.pixel_size_nm is None and image.pixel_size_source == ""


@pytest.mark.parametrize("unit, nm", [("nm", 1.0), ("NM", 1.0), ("µm", 1e3), ("μm", 1e3), ("um", 1e3),
                                      ("micron", 1e3), ("Microns", 1e3), ("\\u00B5m", 1e3), ("Å", 0.1),
                                      ("Å", 0.1), ("\\u00C5", 0.1), ("angstrom", 0.1), ("pm", 1e-3), ("m", 1e9)])
def test_unit_spellings(unit, nm):
    assert nm_per(unit) == nm


@pytest.mark.parametrize("version", [3, 4])
def test_a_digitalmicrograph_stack_and_frame_agree(version, tmp_path):
    path = tmp_path / f"m.dm{version}"
    path.write_bytes(dm_image(FRAMES, 0.0025, "µm", version=version))
    movie = open_movie(path, path.name)
    movie.close()
    decoded = decode_image(dm_image(FRAMES[0], 0.0025, "µm", version=version), path.name, LIMIT)
    assert movie.pixel_size_nm == pytest.approx(2.5) and movie.pixel_size_source == "DigitalMicrograph"
    assert decoded.pixel_size_nm == pytest.approx(2.5) and decoded.pixel_size_source == "DigitalMicrograph"


def test_a_digitalmicrograph_stack_with_non_square_pixels_is_refused_naming_them(tmp_path):
    path = tmp_path / "m.dm4"
    path.write_bytes(dm_image(FRAMES, (1.0, 2.0), "nm", version=4))
    with pytest.raises(Exception, match="non-square pixels"):
        open_movie(path, path.name)


@pytest.mark.realdata
def test_the_real_liquid_cell_frame_reads_alike_as_an_image_and_as_a_movie():
    """The Chen-lab liquid-phase TEM frame: an ImageJ calibration in "um" (2.59 nm/px)."""
    path = data_dir() / "lpem/chenlab_lptem_supracrystal_frame/SAMPLE_0001.tif"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set NANOLENS_DATA)")
    decoded = decode_image(path.read_bytes(), path.name, LIMIT)
    movie = open_movie(path, path.name)
    movie.close()
    assert decoded.pixel_size_source == movie.pixel_size_source == "ImageJ"
    assert decoded.pixel_size_nm == pytest.approx(2.59, abs=0.01)
    assert movie.pixel_size_nm == pytest.approx(decoded.pixel_size_nm, rel=1e-9)


# Real instrument files (hyperspy 1.7.6's tests): the pixel size as hyperspy's own tests state it
REAL = [("tiff_Zeiss_SEM/test_tiff_Zeiss_SEM_1k.tif", 2614.2578125, "Zeiss"),
        ("tiff_FEI_Helios/FEI-Helios-Ebeam-8bits.tif", 3372.4, "FEI"),
        ("olympus_SIS.tif", 0.023927917758761, "Olympus"),
        ("test_loading_image_saved_with_imageJ.tif", 168.67471, "ImageJ"),
        ("test_loading_image_saved_with_DM.tif", 168.67469, "DigitalMicrograph")]


@pytest.mark.parametrize("name, nm, source", REAL)
def test_real_instrument_files(name, nm, source):
    path = HYPERSPY / name
    if not path.exists():
        pytest.skip(NO_HYPERSPY)
    decoded = decode_image(path.read_bytes(), path.name, LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(nm, rel=1e-5) and decoded.pixel_size_source == source
    movie = open_movie(path, path.name)
    movie.close()
    if movie.n_frames == 1:  # a single image read as a one-frame movie states the same
        assert movie.pixel_size_nm == pytest.approx(nm, rel=1e-5) and movie.pixel_size_source == source


@pytest.mark.parametrize("name, nm", [("test_loading_image_saved_with_imageJ_stack.tif", 168.67471),
                                      ("test_loading_image_saved_with_imageJ_stack_no_scale.tif", 0.0)])
def test_real_imagej_stacks_as_movies(name, nm):
    path = HYPERSPY / name
    if not path.exists():
        pytest.skip(NO_HYPERSPY)
    movie = open_movie(path, path.name)
    movie.close()
    assert movie.n_frames == 2 and movie.pixel_size_nm == pytest.approx(nm, rel=1e-5)
    assert movie.pixel_size_source == ("ImageJ" if nm else "")
