"""Plausibility flags on particle-size results: they fire on noise and on images without
particles, and stay quiet on particle images (synthetic here; the real ones in test_realdata)."""

import numpy as np
import pytest

from nanolens_tem.science.baselines import watershed_segment
from nanolens_tem.science.quality import MAX_COVERAGE, MIN_CONTRAST_TO_NOISE, assess
from nanolens_tem.synthetic.agglomerates import SynthParams, generate

RNG = np.random.default_rng(4)


def test_a_synthetic_micrograph_with_its_true_labels_is_trustworthy():
    sample = generate(seed=5, params=SynthParams(shape=(256, 256)))
    quality = assess(sample.image, sample.labels)
    assert quality.trustworthy and quality.contrast_to_noise > 3 * MIN_CONTRAST_TO_NOISE
    assert quality.coverage == pytest.approx(np.mean(sample.labels > 0), abs=1e-4)


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_particles_found_in_noise_are_flagged(noise):
    image = (RNG.integers(0, 255, (256, 256)) if noise == "uniform"
             else np.clip(RNG.normal(128, 30, (256, 256)), 0, 255)).astype(np.uint8)
    seg = watershed_segment(image)
    assert seg.labels.max() > 10  # the method does "find" particles
    quality = assess(image, seg.labels)
    assert not quality.trustworthy and quality.contrast_to_noise < MIN_CONTRAST_TO_NOISE
    assert "indistinguishable from noise" in quality.warnings[0]


def test_an_image_that_is_all_particle_is_flagged():
    image = RNG.integers(0, 255, (64, 64)).astype(np.uint8)
    labels = np.ones((64, 64), np.uint16)
    labels[:2, :2] = 0
    quality = assess(image, labels)
    assert quality.coverage > MAX_COVERAGE and not quality.trustworthy and "background" in quality.warnings[0]


def test_no_particles_is_flagged():
    quality = assess(np.zeros((32, 32)), np.zeros((32, 32), np.uint16))
    assert not quality.trustworthy and quality.warnings == ("no particles were found",)
