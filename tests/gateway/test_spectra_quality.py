"""A silicon reference on an uncalibrated wavenumber axis is told apart from a calibrated one, and
from spectra without a sharp band near 520 cm^-1."""

from __future__ import annotations

import numpy as np

from nanolens_gateway.adapters.spectra import silicon_offsets, spectra_quality
from nanolens_spectra.synthetic.swcnt import generate_spectra


def silicon(centre: float, axis: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    band = 5000 / (1 + ((axis - centre) / 3.5) ** 2) + 300 / (1 + ((axis - 2 * centre - 450) / 30) ** 2)
    return band + 200 + 0.02 * axis + rng.normal(0, 5, axis.size)


def test_silicon_off_by_more_than_3_cm1_is_reported_with_its_offset():
    axis = np.linspace(100, 3000, 1024)
    spectra = np.stack([silicon(520.7, axis), silicon(527.3, axis), silicon(514.0, axis, seed=1)])
    found = silicon_offsets(spectra, axis)
    assert [row for row, _ in found] == [1, 2]
    assert abs(found[0][1] - 527.3) < 1.0 and abs(found[1][1] - 514.0) < 1.0
    quality = spectra_quality(np.array([3.0, 3.0, 3.0]), found)
    assert not quality["trustworthy"] and "off by +6." in quality["warnings"][0]
    assert "spectrum #2" in quality["warnings"][1] and "unlike the model's training data" in quality["warnings"][2]


def test_spectra_without_a_sharp_band_near_520_and_files_without_an_axis_are_not_reported():
    batch = generate_spectra(20, seed=3)  # DNA-SWCNT: RBM, D, G and G' bands, none near 520
    assert silicon_offsets(batch.spectra, batch.axis) == []
    axis = np.linspace(100, 3000, 1024)
    broad = 200 + 3000 / (1 + ((axis - 540) / 40) ** 2)  # a broad band (glass, fluorescence): not silicon
    assert silicon_offsets(broad[None], axis) == []
    assert silicon_offsets(silicon(527.3, axis)[None], None) == []  # no axis in the file: the model's is assumed
    assert spectra_quality(None)["trustworthy"] and spectra_quality(np.array([0.2]))["warnings"] == []
