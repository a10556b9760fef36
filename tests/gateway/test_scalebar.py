"""The pixel size from a burned-in scale bar: found from the pixels, its label read by tesseract,
on synthetic bars of each layout and on real instrument files with their metadata hidden."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from hyperspy_files import FOLDER as HYPERSPY
from hyperspy_files import SKIP as NO_HYPERSPY
from PIL import Image
from scalebars import FONT, LAYOUTS, micrograph, with_scale_bar

from nanolens_formats.images import decode_image
from nanolens_formats.scalebar import find_bars, label_nm, read_scale_bar
from support import data_dir

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="tesseract not installed (make tools, or apt-get install tesseract-ocr)")
needs_font = pytest.mark.skipif(not FONT.exists(), reason=f"{FONT} absent (apt-get install fonts-dejavu-core)")
LABELS = ("200 nm", "1 µm", "500nm", "2 um", "50 Å")


@pytest.mark.parametrize("label, nm", [("200 nm", 200.0), ("1 µm", 1000.0), ("1 μm", 1000.0), ("500nm", 500.0),
                                       ("2 um", 2000.0), ("50 Å", 5.0), ("0.5 um", 500.0), ("2,5 µm", 2500.0),
                                       ("1 mm", 1e6), ("200 NM", 200.0)])
def test_labels_are_lengths(label, nm):
    assert label_nm(label) == pytest.approx(nm)


@pytest.mark.parametrize("label", ["200", "nm", "EHT = 5 kV", "x 200 nm y", "200 nmol", ""])
def test_what_is_no_length_label(label):
    assert label_nm(label) is None


# every layout, every label twice; the bar's length varies with the case
CASES = [(layout, label) for i, layout in enumerate(LAYOUTS) for j, label in enumerate(LABELS) if (i + j) % 2 == 0]


@needs_tesseract
@needs_font
@pytest.mark.parametrize("layout, label", CASES)
def test_a_synthetic_bar_gives_the_pixel_size(layout, label):
    length = 110 + 9 * CASES.index((layout, label))
    image = with_scale_bar(micrograph((384, 512), seed=CASES.index((layout, label))), layout, label, length)
    reading = read_scale_bar(image)
    assert reading.warning == "" and reading.bar is not None and reading.bar.length_px == length
    assert reading.pixel_size_nm == pytest.approx(label_nm(label) / length, rel=1e-9)


def test_no_bar_no_pixel_size_and_no_warning():
    reading = read_scale_bar(micrograph((384, 512), seed=3))
    assert reading.pixel_size_nm is None and reading.bar is None and reading.warning == ""
    assert reading.summary() is None


@needs_tesseract
def test_a_bar_without_a_readable_label_says_so():
    image = with_scale_bar(micrograph((384, 512), seed=4), "info bar", None, 150)
    reading = read_scale_bar(image)
    assert reading.pixel_size_nm is None and reading.bar is not None
    assert "no length label could be read" in reading.warning and "150 px" in reading.warning
    assert reading.summary()["warning"] == reading.warning and reading.summary()["label"] == ""


@needs_font
def test_without_tesseract_a_bar_gives_a_warning_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nowhere to find the program
    image = with_scale_bar(micrograph((384, 512), seed=5), "info bar", "200 nm", 150)
    reading = read_scale_bar(image)
    assert reading.pixel_size_nm is None and "tesseract is not installed" in reading.warning


def test_lines_that_are_not_bars_are_not_taken():
    """A bar is level, thin and stands out on both sides: a step edge, a thick block and a line
    across the whole width are none."""
    image = micrograph((384, 512), seed=6)
    image[300:, :] = 255  # a step edge (the bottom quarter white)
    image[20:60, 100:200] = 0  # a block
    image[40, :] = 255  # a line across the width
    assert find_bars(image) == []


# Real files with both a bar and metadata (hyperspy 1.7.6's tests): the bar read from the pixels
# alone against the pixel size the metadata states
REAL = [("tiff_Zeiss_SEM/test_tiff_Zeiss_SEM_1k.tif", "200 um"),
        ("tiff_Zeiss_SEM/test_tiff_Zeiss_SEM_512pix.tif", "200 nm"),
        ("tiff_FEI_Helios/FEI-Helios-Ebeam-8bits.tif", "500 um"),
        ("tiff_FEI_Helios/FEI-Helios-Ebeam-16bits.tif", "500 um")]


@needs_tesseract
@pytest.mark.parametrize("name, label", REAL)
def test_real_instrument_bars_agree_with_the_metadata(name, label):
    path = HYPERSPY / name
    if not path.exists():
        pytest.skip(NO_HYPERSPY)
    decoded = decode_image(path.read_bytes(), path.name, 4096 * 4096)
    reading = read_scale_bar(decoded.image)  # the pixels only: the metadata hidden
    assert reading.label == label
    assert reading.pixel_size_nm == pytest.approx(decoded.pixel_size_nm, rel=0.015)  # measured: -1.2 % to +1.0 %


@pytest.mark.realdata
@needs_tesseract
def test_real_tem_figures_bars_agree_with_the_hand_measured_pixel_sizes():
    """SAGE soot TEM images: "50 nm" and "52 nm" bars, pixel sizes measured by hand from the bars."""
    folder = data_dir() / "tem/sage_soot_tem"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder} (set NANOLENS_DATA)")
    rows = list(csv.DictReader((folder / "pairs.csv").open()))
    read = {}
    for row in rows:
        image = np.asarray(Image.open(folder / "images" / row["image"]).convert("L"))
        read[row["image"]] = (read_scale_bar(image).pixel_size_nm or 0.0) / float(row["nm_per_px"]) - 1
    assert len(read) == 9 and all(abs(error) < 0.01 for error in read.values()), read
