"""The information bar, whole, on the layouts instruments write (synthetic bars modelled on Zeiss,
FEI/Thermo, JEOL, Hitachi and TESCAN, under a stand-in micrograph), and never on a micrograph
without one (the real images: tests/sem/test_realdata.py, tests/tem/test_realdata.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from nanolens_micrographs import detect_info_bar


def micrograph(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """A stand-in micrograph, 0..1: smooth structure from black to white with detector noise."""
    rng = np.random.default_rng(seed)
    structure = ndi.gaussian_filter(rng.normal(size=shape), 6)
    structure = (structure - structure.min()) / np.ptp(structure)
    return np.clip(structure + rng.normal(0, 0.02, shape), 0, 1)


def _text(bar: np.ndarray, rng: np.random.Generator, row: int, col: int, width: int, ink: float, paper: float,
          height: int = 9) -> None:
    """A line of glyph-like marks with anti-aliased edges (ink, then two greys towards the paper)."""
    x = col
    while x < min(col + width, bar.shape[1] - 6):
        w = int(rng.integers(3, 7))
        glyph = rng.random((height, w)) < 0.45
        soft = np.where(glyph, ink, np.where(rng.random((height, w)) < 0.3, (ink + paper) / 2, paper))
        bar[row:row + height, x:x + w] = soft
        x += w + int(rng.integers(1, 3)) + (int(rng.integers(4, 12)) if rng.random() < 0.2 else 0)


def _logo(bar: np.ndarray, row: int, col: int, rows: int, cols: int, lo: float, hi: float) -> None:
    """A logo: a block of shaded greys."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    bar[row:row + rows, col:col + cols] = lo + (hi - lo) * (0.5 + 0.5 * np.sin(yy / 3.0) * np.cos(xx / 5.0))


def info_bar(layout: str, width: int, rows: int, top: float, seed: int = 0) -> np.ndarray:
    """A bar of ``rows`` x ``width`` in the manner of ``layout``, grey levels up to ``top``."""
    rng = np.random.default_rng(seed)
    white, black, grey = top, 0.0, round(top * 0.5)
    if layout == "tescan":  # light grey panel, black text in a table with frame lines, a logo
        bar = np.full((rows, width), round(top * 0.82), float)
        bar[0, :] = black
        bar[rows // 2, :] = black
        for x in range(0, width, width // 4):
            bar[:, x] = black
        for r in (3, rows // 2 + 3):
            for x in range(0, width - width // 4, width // 4):
                _text(bar, rng, r, x + 4, width // 6, black, round(top * 0.82))
        _logo(bar, 2, width - width // 5, rows - 4, width // 8, grey, white)
        return bar
    bar = np.full((rows, width), black, float)
    if layout == "zeiss":  # frame line on top, cells, two text lines, scale bar with label, logo
        bar[0:2, :] = white
        for x in range(width // 4, width, width // 4):
            bar[:, x] = grey
        for r in (6, rows // 2 + 4):
            for x in range(width // 4, width - width // 4, width // 4):
                _text(bar, rng, r, x + 4, width // 6, white, black)
        _text(bar, rng, 6, 8, width // 10, white, black)
        bar[rows // 2 + 8:rows // 2 + 12, 8:8 + width // 6] = white
        _logo(bar, 4, width - width // 5, rows - 8, width // 7, grey // 2, white)
    elif layout == "fei":  # fields outlined in grey boxes, a scale bar in a box, a logo
        for x0 in range(0, width - width // 6, width // 6):
            bar[2, x0:x0 + width // 6 - 4] = grey
            bar[rows - 3, x0:x0 + width // 6 - 4] = grey
            bar[2:rows - 2, x0] = grey
            _text(bar, rng, 6, x0 + 4, width // 8, white, black)
            _text(bar, rng, rows // 2 + 2, x0 + 4, width // 8, white, black)
        bar[rows // 2:rows // 2 + 3, width - width // 8:width - 10] = white
        _logo(bar, 3, width - width // 6 - 40, rows - 6, 36, grey // 2, white)
    elif layout == "jeol":  # one text line, a white scale bar with end ticks
        _text(bar, rng, rows // 2 - 5, 10, width - 20, white, black, height=11)
        bar[rows - 6:rows - 3, width // 2:width // 2 + width // 8] = white
        bar[rows - 10:rows - 3, width // 2] = white
    elif layout == "hitachi":  # text, and a scale bar drawn as a dotted line
        _text(bar, rng, 4, 10, width // 2, white, black)
        bar[rows - 8:rows - 6, width // 2:width // 2 + width // 4:4] = white
        _text(bar, rng, rows - 16, width // 2 + width // 3, width // 8, white, black)
    return bar


LAYOUTS = ("zeiss", "fei", "jeol", "hitachi", "tescan")


def barred(layout: str, width: int, height: int, rows: int, dtype, seed: int) -> np.ndarray:
    top = float(np.iinfo(dtype).max)
    image = np.concatenate([micrograph(seed, (height, width)) * top, info_bar(layout, width, rows, top, seed)])
    return image.astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("width", "height", "rows", "dtype"), [(512, 384, 36, np.uint8), (768, 512, 56, np.uint16),
                                                                  (1024, 704, 64, np.uint8)])
def test_the_whole_bar_is_found_on_every_layout(layout, width, height, rows, dtype):
    for seed in range(2):
        image = barred(layout, width, height, rows, dtype, seed)
        assert detect_info_bar(image) == rows, (layout, seed)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_bar_on_a_dark_or_bright_micrograph_edge_is_still_whole(layout):
    """The micrograph's bottom rows near the bar's own background level (a dark field above a
    black bar, a bright one above a light one) do not stretch the bar: they carry noise."""
    image = barred(layout, 512, 384, 40, np.uint8, 3).astype(float)
    background = image[-1, 1]
    near = background + (10 if background < 128 else -10)
    image[300:384] = near + np.random.default_rng(3).normal(0, 4, (84, 512))
    image = np.clip(image, 0, 255).astype(np.uint8)
    assert detect_info_bar(image) == 40


def test_no_bar_is_found_without_one():
    rng = np.random.default_rng(0)
    texture = (micrograph(4, (512, 512)) * 255).astype(np.uint8)
    uniform = np.full((256, 256), 200, np.uint8)  # nothing on it: no bar, whatever it is
    saturated = np.clip(rng.normal(240, 20, (256, 256)), 0, 255).astype(np.uint8)  # clipped at white
    noise = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    assert [detect_info_bar(i) for i in (texture, uniform, saturated, noise)] == [0, 0, 0, 0]


#: real micrographs without a bar (TEM, SEM, in-situ TEM): (folder under NANOLENS_DATA, pattern)
REAL = [("tem/chenlab_au_tetrahedra_nanoprisms", "*/image/*.tif"), ("tem/sage_soot_tem/images", "*.png"),
        ("tem/frei_carbonblack_testimages/test_images", "*.png"), ("sem/ampis_powder_sem/images", "*.png"),
        ("sem/uhcs_spheroidite_sem/images", "*.png"), ("sem/lungcell_sem_5class", "*/*.png"),
        ("sem/deepsem_gaas_nanowires", "**/*.png"), ("lpem/msaem_insitu_sintering/dataset", "*/images/*.png"),
        ("lpem/chenlab_lptem_supracrystal_frame", "*.tif")]


@pytest.mark.realdata
def test_no_bar_is_invented_on_real_micrographs_without_one():
    """Flat bright backgrounds (soot on a saturated film), scale bars burned into a corner (soot)
    and smooth dark SEM backgrounds (nanowires) are not bars: their levels carry noise."""
    import tifffile
    from PIL import Image

    from support import data_dir

    if not (data_dir() / "tem").is_dir():
        pytest.skip(f"real data not found at {data_dir()} (set NANOLENS_DATA to ../shared/data)")
    found, n = [], 0
    for folder, pattern in REAL:
        for path in sorted((data_dir() / folder).glob(pattern)):
            image = (tifffile.imread(path) if path.suffix == ".tif" else
                     np.asarray(Image.open(path).convert("L") if Image.open(path).mode in ("P", "RGB", "RGBA")
                                else Image.open(path)))
            image = image[..., 0] if image.ndim == 3 else image
            n += 1
            if detect_info_bar(image):
                found.append(path.name)
    assert n >= 220 and found == []
