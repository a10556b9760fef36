"""Microscope image decoding: formats, pixel sizes from file metadata, refusals that name the problem,
and decompression bombs refused by their declared size before anything is decoded."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import tifffile
from hyperspy_files import FOLDER as HYPERSPY
from hyperspy_files import SKIP as NO_HYPERSPY
from PIL import Image

from bench import bombs
from dmfile import dm_image
from nanolens_formats.images import decode_image
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


@pytest.mark.parametrize("scanned, bar", [(48, 16), (64, 0), (None, 0)])
def test_the_fei_data_bar_rows_come_from_the_metadata(scanned, bar):
    """FEI/Thermo append their data bar below the scan's [Image] ResolutionY rows."""
    text = "[Scan]\r\nPixelWidth=1.5e-09\r\n" + (f"[Image]\r\nResolutionY={scanned}\r\n" if scanned else "")
    decoded = decode_image(tiff(GREY, extratags=[(34682, "s", 0, text, True)]), "fei.tif", LIMIT)
    assert decoded.image.shape == (64, 80) and decoded.info_bar_rows == bar


def test_a_real_fei_file_states_its_data_bar():
    """FEI Helios (hyperspy 1.7.6's test file): 471 rows stored, 442 scanned. Its scan is blank, so
    the pixels alone would take far more rows for the bar."""
    path = HYPERSPY / "tiff_FEI_Helios/FEI-Helios-Ebeam-8bits.tif"
    if not path.exists():
        pytest.skip(NO_HYPERSPY)
    assert decode_image(path.read_bytes(), path.name, LIMIT).info_bar_rows == 29


def zeiss_tiff(pixel_size: str) -> bytes:
    """A TIFF with a Zeiss SmartSEM CZ_SEM tag (34118): upper-case keys, each followed by 'Name = value unit',
    8-bit text (the micro sign is byte 0xB5)."""
    text = f"0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = {pixel_size}\r\nAP_WD\r\nWD = 8.5 mm\r\n"
    return tiff(GREY, extratags=[(34118, "s", 0, text.encode("latin-1"), True)])


@pytest.mark.parametrize("pixel_size, nm", [("2.344 nm", 2.344), ("1.25 µm", 1250.0), ("3.5 pm", 0.0035)])
def test_zeiss_tiff_gives_the_pixel_size(pixel_size, nm):
    decoded = decode_image(zeiss_tiff(pixel_size), "zeiss.tif", LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(nm) and decoded.pixel_size_source == "Zeiss"
    np.testing.assert_array_equal(decoded.image, GREY)


def zeiss_scan_tiff(image, width: str, pixel_size: str) -> bytes:
    text = (f"0\r\n0\r\nAP_WIDTH\r\nWidth = {width}\r\nAP_PIXEL_SIZE\r\nPixel Size = {pixel_size}\r\n"
            "DP_DETECTOR_CHANNEL\r\nSignal A = InLens\r\n")
    return tiff(image, extratags=[(34118, "s", 0, text.encode("latin-1"), True)])


@pytest.mark.parametrize("columns", [1024, 512, 256])
def test_zeiss_pixel_size_is_the_field_width_over_the_stored_columns(columns):
    """A 1024-column scan of a 5.965 um field saved at fewer columns keeps the scan's 5.825 nm
    'Pixel Size' (as in the public SmartSEM test file test_tiff_Zeiss_SEM_512pix.tif, whose 200 nm
    scale bar gives 11.65 nm/px); the stored pixels are 5965 nm / columns."""
    image = RNG.integers(0, 255, (columns * 3 // 4, columns), dtype=np.uint8)
    decoded = decode_image(zeiss_scan_tiff(image, "5.965 \xb5m", "5.825 nm"), "zeiss.tif", LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(5965.0 / columns) and decoded.pixel_size_source == "Zeiss"


def test_zeiss_tiff_with_an_unknown_unit_has_no_pixel_size():
    decoded = decode_image(zeiss_tiff("2.0 furlong"), "zeiss.tif", LIMIT)
    assert decoded.pixel_size_nm is None and decoded.pixel_size_source == ""


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_digitalmicrograph_image_and_pixel_size(version, dtype):
    image = (GREY.astype(dtype) * (3 if dtype != np.uint8 else 1))
    data = dm_image(image, 0.125, "nm", version=version, thumbnail=version == 4)
    decoded = decode_image(data, f"frame.dm{version}", LIMIT)
    np.testing.assert_array_equal(decoded.image, image)
    assert decoded.image.dtype == np.dtype(dtype)
    assert decoded.pixel_size_nm == pytest.approx(0.125) and decoded.pixel_size_source == "DigitalMicrograph"


def test_digitalmicrograph_units_are_converted():
    assert decode_image(dm_image(GREY, 0.002, "µm"), "a.dm3", LIMIT).pixel_size_nm == pytest.approx(2.0)


@pytest.mark.parametrize("scale, unit", [(1.0, ""), (0.05, "1/nm")])
def test_digitalmicrograph_without_a_length_calibration_has_no_pixel_size(scale, unit):
    decoded = decode_image(dm_image(GREY, scale, unit, version=4), "a.dm4", LIMIT)
    assert decoded.pixel_size_nm is None
    np.testing.assert_array_equal(decoded.image, GREY)


def test_digitalmicrograph_file_too_big_for_one_image_is_refused_before_it_is_read():
    data = dm_image(RNG.random((1024, 1024)).astype(np.float32), 0.1, "nm")  # 4 MiB
    with pytest.raises(ResourceExhausted, match="more than one image"):
        decode_image(data, "stack.dm4", max_pixels=1000)


def test_digitalmicrograph_refusals_name_the_problem():
    with pytest.raises(InvalidArgument, match="non-square pixels"):
        decode_image(dm_image(GREY, (0.1, 0.2), "nm"), "a.dm3", LIMIT)
    good = dm_image(GREY, 0.1, "nm")
    with pytest.raises(InvalidArgument, match="not a readable DM3/DM4"):
        decode_image(good[:200], "cut.dm3", LIMIT)
    with pytest.raises(InvalidArgument, match="not a readable DM3/DM4"):
        decode_image(b"\x00\x00\x00\x07" + good[4:], "wrong-version.dm3", LIMIT)


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


def refused_within(data: bytes, key: str, limit_mib: float, max_pixels: int = LIMIT) -> str:
    """The refusal of a bomb, and that Python and numpy took less than ``limit_mib`` to give it."""
    tracemalloc.start()
    try:
        with pytest.raises(ResourceExhausted) as info:
            decode_image(data, key, max_pixels)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < limit_mib + len(data) / 2**20, f"{key}: {peak:.1f} MiB taken before the refusal"
    return str(info.value)


@pytest.mark.parametrize("key, make", [
    ("rgb-13000.png", lambda: bombs.png(13000, 13000)),              # 490 KB, 507 MB inflated
    ("declares-100000.png", lambda: bombs.png(100000, 100000, rows=1)),  # a header and one row
    ("zlib-20000.tif", lambda: bombs.tiff(20000, 20000)),             # 800 KB, 800 MB inflated
    ("declares-100000.npy", lambda: bombs.npy_declaring((100000, 100000))),  # 80 GB declared
])
def test_decompression_bombs_are_refused_by_their_declared_size_before_decoding(key, make):
    assert "above the" in refused_within(make(), key, limit_mib=4)


def test_a_digitalmicrograph_image_above_the_limit_is_refused_by_its_declared_size():
    data = dm_image(GREY, 0.1, "nm")  # 64 x 80: small enough for the file-size check, not for the limit
    assert "64" in refused_within(data, "a.dm4", limit_mib=4, max_pixels=1000)


def test_a_npy_image_shorter_than_its_header_says_is_refused_naming_it():
    with pytest.raises(InvalidArgument, match="ends after 64 of the 8192 bytes"):
        decode_image(bombs.npy_declaring((32, 32)), "short.npy", LIMIT)


@pytest.mark.realdata
def test_real_liquid_cell_frame_calibration():
    path = data_dir() / "lpem/chenlab_lptem_supracrystal_frame/SAMPLE_0001.tif"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set NANOLENS_DATA)")
    decoded = decode_image(path.read_bytes(), path.name, LIMIT)
    assert decoded.image.shape == (1024, 1024) and decoded.image.dtype == np.uint16
    assert decoded.pixel_size_nm == pytest.approx(2.59, abs=0.01)  # the published calibration


def test_a_jpeg_compressed_tiff_is_read():
    """Olympus SIS and others store JPEG-compressed TIFFs (imagecodecs decodes them)."""
    image = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    decoded = decode_image(tiff(image, compression="jpeg"), "sis.tif", LIMIT)
    assert decoded.image.shape == (48, 64)
    assert np.abs(decoded.image.astype(int) - image).mean() < 3  # lossy, but the same picture


def test_a_multi_page_tiff_is_refused_like_a_3d_dm_file_not_read_as_its_first_page():
    stack = np.stack([GREY, GREY[::-1]])
    with pytest.raises(InvalidArgument, match="stack of 2 images; need one 2D image"):
        decode_image(tiff(stack, imagej=True), "stack.tif", LIMIT)
    with pytest.raises(InvalidArgument, match="stack of 2 images"):
        decode_image(_two_pages(), "pages.tif", LIMIT)


def _two_pages() -> bytes:
    out = io.BytesIO()
    with tifffile.TiffWriter(out) as writer:
        writer.write(GREY)
        writer.write(GREY[::-1])
    return out.getvalue()


def test_a_tiff_with_a_thumbnail_is_one_image():
    out = io.BytesIO()
    with tifffile.TiffWriter(out) as writer:
        writer.write(GREY, subifds=0)
        writer.write(GREY[::4, ::4], subfiletype=1)  # a reduced-resolution page
    decoded = decode_image(out.getvalue(), "thumb.tif", LIMIT)
    np.testing.assert_array_equal(decoded.image, GREY)


@pytest.mark.parametrize("pixel_size", [0.8, None])
def test_labels_tif_keeps_the_inputs_calibration(pixel_size):
    from nanolens_gateway.adapters.pictures import labels_tiff

    labels = np.zeros((32, 40), np.uint16)
    labels[4:10, 5:12] = 1
    with tifffile.TiffFile(io.BytesIO(labels_tiff(labels, pixel_size))) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), labels)
        if pixel_size:
            assert tif.imagej_metadata["unit"] == "nm"
            numerator, denominator = tif.pages[0].tags["XResolution"].value
            assert denominator / numerator == pytest.approx(pixel_size, rel=1e-6)
        else:
            assert not tif.is_imagej


@pytest.mark.parametrize("signal, bright", [("InLens", True), ("HE-SE2", True), ("AsB", True), ("Camera", None)])
def test_the_zeiss_detector_says_whether_particles_are_bright(signal, bright):
    text = f"0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = 2.0 nm\r\nDP_DETECTOR_CHANNEL\r\nSignal A = {signal}\r\n"
    decoded = decode_image(tiff(GREY, extratags=[(34118, "s", 0, text.encode("latin-1"), True)]), "z.tif", LIMIT)
    assert decoded.detector == f"Zeiss {signal}" and decoded.bright_particles is bright


@pytest.mark.parametrize("name, mode, bright", [("ETD", "SE", True), ("CBS", "BSE", True), ("HAADF", "", True),
                                                ("BF", "", False)])
def test_the_fei_detector_says_whether_particles_are_bright(name, mode, bright):
    text = f"[Scan]\r\nPixelWidth=1.5e-09\r\n[Detectors]\r\nName={name}\r\nMode={mode}\r\n"
    decoded = decode_image(tiff(GREY, extratags=[(34682, "s", 0, text, True)]), "fei.tif", LIMIT)
    assert decoded.bright_particles is bright and name in decoded.detector


def test_files_without_a_detector_leave_the_contrast_open():
    assert decode_image(tiff(GREY), "plain.tif", LIMIT).bright_particles is None
    assert decode_image(pil(GREY), "plain.png", LIMIT).bright_particles is None


def test_a_colour_rendering_beside_the_greyscale_data_gives_the_data():
    """Olympus SIS files hold the image twice: an RGB rendering (JPEG) and the uint16 data."""
    data16 = (GREY.astype(np.uint16) * 100)
    out = io.BytesIO()
    with tifffile.TiffWriter(out) as writer:
        writer.write(np.stack([GREY] * 3, axis=-1), photometric="rgb", compression="jpeg")
        writer.write(data16)
    decoded = decode_image(out.getvalue(), "sis.tif", LIMIT)
    assert decoded.image.dtype == np.uint16
    np.testing.assert_array_equal(decoded.image, data16)


def test_a_tiff_saved_by_digitalmicrograph_keeps_its_calibration():
    """DigitalMicrograph writes its calibration into private tags (65009/65010 scale, 65003/65004
    unit), as in the public test file test_loading_image_saved_with_DM.tif (0.1687 um/px)."""
    tags = [(65003, "s", 0, "um", True), (65004, "s", 0, "um", True),
            (65009, "d", 1, 0.16867469, True), (65010, "d", 1, 0.16867469, True)]
    decoded = decode_image(tiff(GREY.astype(np.float32), extratags=tags), "dm.tif", LIMIT)
    assert decoded.pixel_size_nm == pytest.approx(168.67469) and decoded.pixel_size_source == "DigitalMicrograph"
