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


def test_default_cnn_beats_watershed_on_real_tetrahedra(gold_data):
    from nanolens_tem.baselines import watershed_segment
    from nanolens_tem.cnn import CnnSegmenter
    from nanolens_tem.models import latest_bundle

    bundle = latest_bundle("tem-unet")
    if bundle is None:
        pytest.skip("no shipped tem-unet bundle")
    items = [it for it in gold_data if it[0] == "tetrahedra"][:4]
    seg = CnnSegmenter.from_bundle(bundle)
    f_cnn = _f1(lambda im: seg.segment(im), items)
    f_ws = _f1(watershed_segment, items)
    assert f_cnn > f_ws
    assert np.isfinite(f_cnn)


def test_carbon_black_images_read(gold_data):
    from nanolens_tem.data import carbon_black_dir, read_gray

    files = sorted(carbon_black_dir().glob("*.png"))
    assert len(files) == 6
    assert read_gray(files[0]).shape == (1952, 2240)
