"""Microscope image decoding: formats, pixel sizes from file metadata, and refusals that name the problem."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from nanolens_gateway.images import decode_image
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted
from support import data_dir

LIMIT = 4096 * 4096
RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 255, (64, 80), dtype=np.uint8)


def tiff(array, **kwargs) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, array, **kwargs)
    return out.getvalue()


def pil(array, fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def test_imagej_tiff_gives_the_pixel_size():
    data = tiff(GREY.astype(np.uint16) * 200, imagej=True, resolution=(1 / 2.5, 1 / 2.5), metadata={"unit": "nm"})
    decoded = decode_image(data, "a.tif", LIMIT)
    assert decoded.image.dtype == np.uint16 and decoded.image.shape == (64, 80)
    assert decoded.pixel_size_nm == pytest.approx(2.5, rel=1e-4) and decoded.pixel_size_source == "ImageJ"


def test_imagej_micron_units():
    data = tiff(GREY, imagej=True, resolution=(400.0, 400.0), metadata={"unit": "um"})
    assert decode_image(data, "a.tiff", LIMIT).pixel_size_nm == pytest.approx(2.5, rel=1e-4)


def test_fei_tiff_gives_the_pixel_size():
    text = "[Scan]\r\nPixelWidth=1.5e-09\r\n[System]\r\nType=SEM\r\n"
    decoded = decode_image(tiff(GREY, extratags=[(34682, "s", 0, text, True)]), "fei.tif", LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(1.5) and decoded.pixel_size_source == "FEI"


def test_plain_formats_have_no_pixel_size():
    for fmt, key in (("PNG", "a.png"), ("BMP", "a.bmp")):
        decoded = decode_image(pil(GREY, fmt), key, LIMIT)
        assert decoded.pixel_size_nm is None
        np.testing.assert_array_equal(decoded.image, GREY)


def test_sixteen_bit_png_and_grey_rgb_are_accepted():
    deep = (GREY.astype(np.uint16) * 257)
    assert decode_image(pil(deep), "deep.png", LIMIT).image.dtype == np.uint16
    rgb = np.repeat(GREY[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(decode_image(pil(rgb), "grey.png", LIMIT).image, GREY)


@pytest.mark.parametrize("data, key, words", [
    (b"", "a.tif", "empty"),
    (b"GIF89a not a tiff", "a.tif", "not a readable TIFF"),
    (b"\x89PNG\r\n\x1a\n broken", "a.png", "not a readable image"),
    (pil(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "colour.png", "colour image"),
    (pil(np.zeros((1, 1), np.uint8)), "dot.png", "at least 16 x 16"),
    (pil((RNG.random((64, 64)) > 0.5).astype(np.uint8) * 255), "mask.png", "mask"),
    (b"1,2,3", "a.csv", "unknown image format"),
])
def test_refusals_name_the_problem(data, key, words):
    with pytest.raises(InvalidArgument, match=words):
        decode_image(data, key, LIMIT)


def test_nan_in_a_float_image():
    image = RNG.random((32, 32)).astype(np.float32)
    image[3, 4] = np.nan
    out = io.BytesIO()
    np.save(out, image)
    with pytest.raises(InvalidArgument, match="NaN"):
        decode_image(out.getvalue(), "f.npy", LIMIT)


def test_images_above_the_limit_are_resource_exhausted():
    with pytest.raises(ResourceExhausted, match="limit"):
        decode_image(pil(GREY), "a.png", max_pixels=1000)


@pytest.mark.realdata
def test_real_liquid_cell_frame_calibration():
    path = data_dir() / "lpem/chenlab_lptem_supracrystal_frame/SAMPLE_0001.tif"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set NANOLENS_DATA)")
    decoded = decode_image(path.read_bytes(), path.name, LIMIT)
    assert decoded.image.shape == (1024, 1024) and decoded.image.dtype == np.uint16
    assert decoded.pixel_size_nm == pytest.approx(2.59, abs=0.01)  # the published calibration
