"""Checks on the real measured TEM data (skipped, with the reason, when it is absent)."""

import numpy as np
import pytest

from nanolens_tem.metrics import instance_f1, match_instances

pytestmark = pytest.mark.realdata


def test_gold_masks_give_the_documented_instance_counts(gold_data):
    from nanolens_tem.data import gold_instances

    counts = {"tetrahedra": 0, "nanoprisms": 0}
    for subset, _, mask in gold_data:
        counts[subset] += int(gold_instances(mask).max())
    assert counts == {"tetrahedra": 480, "nanoprisms": 39}


def _f1(seg_fn, items):
    from nanolens_tem.data import gold_instances, read_gray

    tp = fp = fn = 0
    for _, img, mask in items:
        a, b, c = match_instances(gold_instances(mask), seg_fn(read_gray(img)).labels)
        tp, fp, fn = tp + a, fp + b, fn + c
    return instance_f1(tp, fp, fn)


def test_shipped_cnn_segments_real_gold_images(gold_data):
    """Regression guard for the synthetic-only CNN on real masks (documented in docs/tem.md:
    zero-shot it is below the watershed baseline; fine-tuned on other real images it is above)."""
    from nanolens_tem.cnn import CnnSegmenter
    from nanolens_tem.models import latest_bundle

    bundle = latest_bundle("tem-unet")
    if bundle is None:
        pytest.skip("no shipped tem-unet bundle")
    tet = [it for it in gold_data if it[0] == "tetrahedra"]
    items = tet[:2] + [it for it in gold_data if it[0] == "nanoprisms"][:2]
    seg = CnnSegmenter.from_bundle(bundle)
    f1 = _f1(lambda im: seg.segment(im, diameter="area"), items)
    assert np.isfinite(f1) and f1 > 0.25


def test_carbon_black_images_read():
    from nanolens_tem.data import carbon_black_dir, read_gray

    if not carbon_black_dir().is_dir():
        pytest.skip(f"real data not found at {carbon_black_dir()} (set NANOLENS_DATA to ../shared/data)")
    files = sorted(carbon_black_dir().glob("*.png"))
    assert len(files) == 6
    assert read_gray(files[0]).shape == (1952, 2240)
