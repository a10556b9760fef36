"""The verdict on particle-size results: its signals, its rules, and how its thresholds are fitted
(the fitted rates on real and synthetic data: docs/tem-evaluation.md, "Verdict")."""

import math

import numpy as np
import pytest

from nanolens_tem.evaluation.verdict import fit, leave_one_set_out, outcome
from nanolens_tem.science.baselines import watershed_segment
from nanolens_tem.science.quality import THRESHOLDS, Signals, assess, beyond, cross_check, judge
from nanolens_tem.synthetic.agglomerates import SynthParams, generate

RNG = np.random.default_rng(4)


def test_a_synthetic_micrograph_with_its_true_labels_is_trustworthy():
    sample = generate(seed=5, params=SynthParams(shape=(256, 256)))
    quality = assess(sample.image, sample.labels)
    assert quality.trustworthy, quality.warnings
    assert quality.signals.contrast_to_noise > 3
    assert quality.signals.coverage == pytest.approx(np.mean(sample.labels > 0), abs=1e-4)
    assert quality.signals.faint_fraction < 0.1 and quality.signals.outline_ratio == pytest.approx(1)
    assert math.isnan(quality.signals.classical_ratio)  # not measured, never flags


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_particles_found_in_noise_are_flagged(noise):
    image = (RNG.integers(0, 255, (256, 256)) if noise == "uniform"
             else np.clip(RNG.normal(128, 30, (256, 256)), 0, 255)).astype(np.uint8)
    seg = watershed_segment(image)
    assert seg.labels.max() > 10  # the method does "find" particles
    quality = assess(image, seg.labels, seg.diameters, **cross_check(image, watershed_segment, True, classical=False))
    assert not quality.trustworthy
    assert quality.signals.contrast_to_noise < 1.3


def test_an_image_that_is_all_particle_is_flagged():
    image = RNG.integers(0, 255, (64, 64)).astype(np.uint8)
    labels = np.ones((64, 64), np.uint16)
    labels[:2, :2] = 0
    quality = assess(image, labels)
    assert quality.signals.coverage > 0.99 and not quality.trustworthy


def test_no_particles_is_flagged():
    quality = assess(np.zeros((32, 32)), np.zeros((32, 32), np.uint16))
    assert not quality.trustworthy and quality.warnings == ("no particles were found",)


def test_particles_cut_by_the_edge_are_counted():
    labels = np.zeros((40, 40), np.uint16)
    labels[0:5, 10:15] = 1  # touches the top
    labels[20:25, 20:25] = 2
    labels[35:40, 0:5] = 3  # touches the bottom (where an information bar was cut off) and the left
    image = np.where(labels > 0, 50, 200).astype(np.uint8)
    assert assess(image, labels).signals.edge_fraction == pytest.approx(2 / 3)


def test_the_half_scale_check_agrees_on_particles_large_enough_to_halve():
    sample = generate(seed=7, params=SynthParams(shape=(256, 256), gmd=40.0, gsd=1.1))
    seg = watershed_segment(sample.image)
    others = cross_check(sample.image, watershed_segment, True, classical=False)
    signals = assess(sample.image, seg.labels, seg.diameters, **others).signals
    assert 0.85 < signals.half_scale_ratio < 1.15
    assert set(others) == {"half_scale_gmd"}


@pytest.mark.parametrize(("kind", "threshold", "value", "flagged"), [
    ("min", 2.0, 1.9, True), ("min", 2.0, 2.1, False), ("max", 0.5, 0.6, True), ("max", 0.5, 0.4, False),
    ("band", 1.5, 1.6, True), ("band", 1.5, 1 / 1.6, True), ("band", 1.5, 1.4, False), ("band", 1.5, 1 / 1.4, False),
    ("min", 2.0, math.nan, False), ("band", 1.5, math.nan, False),
])
def test_a_threshold_flags_only_beyond_it(kind, threshold, value, flagged):
    assert beyond(kind, threshold, value) is flagged


def test_every_shipped_threshold_gives_its_reason():
    signals = Signals(contrast_to_noise=0.0, coverage=1.0, count=1, gmd_px=0.5, edge_fraction=1.0, faint_fraction=1.0,
                      outline_ratio=100.0, classical_ratio=100.0, classical_count_ratio=100.0, half_scale_ratio=100.0)
    warnings = judge(signals)
    assert len(warnings) == len(THRESHOLDS) and not any("{" in w for w in warnings)
    assert judge(signals, {}) == ()


def _row(group: str, error: float | None, **signals) -> dict:
    base = dict(contrast_to_noise=5.0, coverage=0.2, count=50, gmd_px=20.0, edge_fraction=0.0, faint_fraction=0.0,
                outline_ratio=1.0, classical_ratio=1.0, classical_count_ratio=1.0, half_scale_ratio=1.0)
    return {"id": f"{group}/{len(signals)}/{error}", "group": group, "true_count": None if error is None else 10,
            "error": math.nan if error is None else error, "signals": {**base, **signals}}


def test_the_fit_places_thresholds_between_wrong_and_right_results():
    rows = ([_row("a", 0.02, faint_fraction=f) for f in (0.0, 0.05, 0.1)]
            + [_row("a", 0.5, faint_fraction=f) for f in (0.5, 0.7)]
            + [_row("b", -0.03, half_scale_ratio=r) for r in (0.95, 1.1, 1.2)]
            + [_row("b", -0.6, half_scale_ratio=r) for r in (2.5, 0.3)]
            + [_row("b", None, contrast_to_noise=0.4)]    # "particles" in noise
            + [_row("b", 0.15, faint_fraction=0.9)])        # between 10 and 20 % off: neither
    assert [outcome(r) for r in rows[-2:]] == ["wrong", "between"]
    fitted = fit(rows, budget=0.0)
    assert set(fitted) >= {"faint_fraction", "half_scale_ratio"}
    flagged = [bool(judge(_signals(r), fitted)) for r in rows]
    assert flagged[:3] == [False] * 3 and flagged[3:5] == [True] * 2
    assert flagged[5:8] == [False] * 3 and flagged[8:11] == [True] * 3


def test_a_set_left_out_is_judged_by_thresholds_fitted_without_it():
    rows = ([_row("a", 0.0, faint_fraction=0.1), _row("a", 0.5, faint_fraction=0.6)]
            + [_row("b", 0.0, faint_fraction=0.0), _row("b", 0.5, faint_fraction=0.3)])
    flagged, fitted = leave_one_set_out(rows, budget=0.0)
    # fitted on "a" alone, the threshold lies halfway between a's results, above b's wrong one
    assert fitted["b"] == {"faint_fraction": ("max", 0.35)} and fitted["a"] == {"faint_fraction": ("max", 0.15)}
    assert flagged.tolist() == [False, True, False, False]


def _signals(row: dict) -> Signals:
    return Signals(**{k: (int(v) if k == "count" else v) for k, v in row["signals"].items()})
