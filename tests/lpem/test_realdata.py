"""The shipped U-Net on the public real frames (NANOLENS_DATA); skipped when the data is absent."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from nanolens_lpem.bundles import latest_bundle
from nanolens_lpem.evaluation.metrics import match, summarise
from nanolens_lpem.evaluation.real import data_dir, otsu_watershed, sintering_items
from nanolens_lpem.science.segmentation import segment_frames

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def items():
    if not (data_dir() / "msaem_insitu_sintering").is_dir():
        pytest.skip(f"real data not found at {data_dir()} (set NANOLENS_DATA to ../shared/data)")
    return sintering_items()[:10]


def test_binned_unet_finds_the_sintering_particles_better_than_otsu_watershed(items):
    session = ort.InferenceSession(str(latest_bundle("lpem-unet") / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    unet = summarise([match(t, segment_frames(session, im[None], binning=4)[0].labels) for _, im, t in items])
    base = summarise([match(t, otsu_watershed(im)) for _, im, t in items])
    assert unet["n_truth"] > 100
    assert unet["f1_iou50"] > 0.8 and unet["f1_iou50"] > base["f1_iou50"] + 0.2
    assert abs(unet["count_err"]) < 0.2
    assert np.isfinite(unet["pixel_iou"]) and unet["pixel_iou"] > 0.6


def test_the_count_does_not_depend_on_the_magnification_with_default_options(items):
    """Real sintering frames (particle radii 15-60 px, beyond the U-Net's 3-16) as they are and
    downscaled by 2: the binning chosen from each follows the magnification and the count per
    frame stays within 10 %, where unbinned (the previous default) it was off by thousands of
    per cent (docs/lpem-evaluation.md, "Binning")."""
    from nanolens_lpem.science.segmentation import bin_frames, choose_binning

    session = ort.InferenceSession(str(latest_bundle("lpem-unet") / "model.onnx"),
                                   providers=["CPUExecutionProvider"])

    def count(frame):
        choice = choose_binning(session, frame)
        return len(segment_frames(session, frame[None], binning=choice.binning)[0].table), choice

    for _, image, truth in items[::5]:
        n, full = count(image)
        half_n, half = count(bin_frames(image[None], 2)[0])
        assert full.source == "movie" and full.binning >= 2
        assert full.typical_radius_px / 2 == pytest.approx(half.typical_radius_px, rel=0.25)
        assert half_n == pytest.approx(n, rel=0.10)
        assert n == pytest.approx(truth.max(), rel=0.3)
