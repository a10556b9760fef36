"""Checks on the real measured TEM data (skipped, with the reason, when it is absent)."""

import pytest

from nanolens_tem.evaluation.metrics import instance_f1, match_instances

pytestmark = pytest.mark.realdata


def test_gold_masks_give_the_documented_instance_counts(gold_data):
    from nanolens_tem.evaluation.data import gold_instances

    counts = {"tetrahedra": 0, "nanoprisms": 0}
    for subset, _, mask in gold_data:
        counts[subset] += int(gold_instances(mask).max())
    assert counts == {"tetrahedra": 480, "nanoprisms": 39}


def _f1(seg_fn, items, cut_bridges=0):
    from nanolens_tem.evaluation.data import gold_instances, read_gray

    tp = fp = fn = 0
    for _, img, mask in items:
        a, b, c = match_instances(gold_instances(mask, cut_bridges), seg_fn(read_gray(img)).labels)
        tp, fp, fn = tp + a, fp + b, fn + c
    return instance_f1(tp, fp, fn)


def test_shipped_cnn_beats_watershed_on_real_gold_images(gold_data):
    """Zero-shot, the shipped CNN (trained on synthetic spheres and faceted crystals, never on
    these images) separates the real gold crystals better than the watershed baseline: F1 0.748
    (1.4.0) against 0.680 on the 30 images with bridges cut (docs/tem.md)."""
    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.science.baselines import watershed_segment
    from nanolens_tem.science.cnn import CnnSegmenter

    bundle = latest_bundle("tem-unet")
    if bundle is None:
        pytest.skip("no shipped tem-unet bundle")
    seg = CnnSegmenter.from_bundle(bundle)
    cnn = _f1(lambda im: seg.segment(im, diameter="area"), gold_data, cut_bridges=2)
    watershed = _f1(watershed_segment, gold_data, cut_bridges=2)
    assert cnn > watershed + 0.04 and cnn > 0.7


def test_carbon_black_images_read():
    from nanolens_tem.evaluation.data import carbon_black_dir, read_gray

    if not carbon_black_dir().is_dir():
        pytest.skip(f"real data not found at {carbon_black_dir()} (set NANOLENS_DATA to ../shared/data)")
    files = sorted(carbon_black_dir().glob("*.png"))
    assert len(files) == 6
    assert read_gray(files[0]).shape == (1952, 2240)


def test_quality_flags_stay_quiet_on_every_real_tem_image_and_fire_on_noise(gold_data):
    """The shipped CNN (the default method) on the 30 real gold images and the 6 carbon-black
    images: none flagged; on 10 seeded noise images of each kind: all flagged
    (docs/tem-evaluation.md, "Plausibility")."""
    import numpy as np

    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.evaluation.data import carbon_black_dir, read_gray
    from nanolens_tem.science.cnn import CnnSegmenter
    from nanolens_tem.science.quality import assess

    seg = CnnSegmenter.from_bundle(latest_bundle("tem-unet"))
    images = [read_gray(img) for _, img, _ in gold_data] + [read_gray(p) for p in
                                                            sorted(carbon_black_dir().glob("*.png"))]
    assert len(images) == 36
    flagged_real = [i for i, im in enumerate(images) if not assess(im, seg.segment(im).labels).trustworthy]
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (512, 512)).astype(np.uint8) for _ in range(10)]
    noise += [np.clip(rng.normal(128, 30, (512, 512)), 0, 255).astype(np.uint8) for _ in range(10)]
    missed_noise = [i for i, im in enumerate(noise) if assess(im, seg.segment(im).labels).trustworthy]
    assert flagged_real == [] and missed_noise == []
