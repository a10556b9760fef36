"""The synthetic DNA-SWCNT Raman generator: determinism, shapes, band positions, class effects."""

from __future__ import annotations

import numpy as np
import pytest

from nanolens_spectra.science.preprocessing import baseline_correct
from nanolens_spectra.synthetic import swcnt as syn


def test_default_axis():
    x = syn.default_axis()
    assert x.dtype == np.float64 and x.shape == (1024,)
    assert x[0] == 100.0 and x[-1] == 3000.0 and np.all(np.diff(x) > 0)


def test_same_seed_is_bit_identical_and_other_seed_differs():
    a = syn.generate_spectra(6, seed=11)
    b = syn.generate_spectra(6, seed=11)
    c = syn.generate_spectra(6, seed=12)
    np.testing.assert_array_equal(a.spectra, b.spectra)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.spectra, c.spectra)


def test_shapes_dtypes_and_balanced_classes():
    d = syn.generate_spectra(7, seed=0)
    assert d.spectra.dtype == np.float32 and d.spectra.shape == (21, 1024)
    assert d.labels.dtype == np.int64 and np.bincount(d.labels).tolist() == [7, 7, 7]
    assert d.class_names == syn.CLASSES == ("early_endosome", "late_endosome", "lysosome")
    assert np.all(np.isfinite(d.spectra))


def test_custom_axis_is_used():
    axis = np.linspace(1200.0, 1800.0, 300)
    d = syn.generate_spectra(2, seed=0, axis=axis)
    assert d.spectra.shape == (6, 300)
    np.testing.assert_array_equal(d.axis, axis)


@pytest.mark.parametrize("bad", [np.array([3.0, 2.0, 1.0]), np.array([1.0]), np.array([1.0, np.nan, 3.0])])
def test_bad_axis_is_rejected(bad):
    with pytest.raises(ValueError, match="axis"):
        syn.generate_spectra(2, seed=0, axis=bad)


def test_rbm_positions_follow_diameter():
    # (7,5): d = 0.829 nm -> ~282 cm^-1; larger tubes breathe slower.
    assert syn.tube_diameter_nm(7, 5) == pytest.approx(0.829, abs=0.002)
    assert syn.rbm_position_cm1(7, 5) == pytest.approx(282.1, abs=0.5)
    positions = [syn.rbm_position_cm1(*nm) for nm in syn.CHIRALITIES]
    assert min(positions) > 145 and max(positions) < 300


@pytest.fixture(scope="module")
def class_means():
    """Baseline-corrected mean spectrum of each class (noise averages out)."""
    d = syn.generate_spectra(60, seed=3)
    y = baseline_correct(d.spectra, d.axis, degree=5, iterations=20)
    return d.axis, np.stack([y[d.labels == k].mean(axis=0) for k in range(3)])


def _peak(x, y, lo, hi):
    sel = (x >= lo) & (x <= hi)
    return x[sel][np.argmax(y[sel])], y[sel].max()


def _centroid(x, y, lo, hi):
    sel = (x >= lo) & (x <= hi)
    w = np.clip(y[sel], 0, None)
    return float((x[sel] * w).sum() / w.sum())


def test_bands_where_they_should_be(class_means):
    x, means = class_means
    step = x[1] - x[0]
    early = means[0]
    g_pos, g_height = _peak(x, early, 1540, 1640)
    assert abs(g_pos - 1591) <= step
    d_pos, d_height = _peak(x, early, 1300, 1400)
    assert abs(d_pos - 1350) <= 2 * step and 0.02 < d_height / g_height < 0.2
    gp_pos, gp_height = _peak(x, early, 2600, 2760)
    assert abs(gp_pos - 2680) <= 2 * step and 0.2 < gp_height / g_height < 0.8
    rbm_pos, rbm_height = _peak(x, early, 140, 320)
    assert 150 <= rbm_pos <= 300 and rbm_height > 0.05 * g_height
    # Nothing but background in a band-free window.
    quiet = (x > 1800) & (x < 2400)
    assert np.abs(early[quiet]).max() < 0.05 * g_height


def test_class_effects_have_the_documented_direction(class_means):
    x, means = class_means
    g_plus = [_centroid(x, m, 1580, 1605) for m in means]
    g_prime = [_centroid(x, m, 2620, 2740) for m in means]
    d_to_g = [_peak(x, m, 1300, 1400)[1] / _peak(x, m, 1540, 1640)[1] for m in means]
    assert g_plus[0] < g_plus[1] < g_plus[2]        # p-doping stiffens G+
    assert g_prime[0] > g_prime[1] > g_prime[2]     # and softens G'
    assert d_to_g[0] < d_to_g[1] < d_to_g[2]        # more disorder in later compartments


def test_map_is_deterministic_and_spatially_coherent():
    cube, labels = syn.generate_map(40, 48, seed=5)
    cube2, labels2 = syn.generate_map(40, 48, seed=5)
    assert cube.shape == (40, 48, 1024) and cube.dtype == np.float32
    assert labels.shape == (40, 48) and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(cube, cube2)
    np.testing.assert_array_equal(labels, labels2)
    assert set(np.unique(labels)) <= {0, 1, 2}
    # Blobs, not salt and pepper: neighbours mostly share a class (random labels: ~1/3).
    same = np.concatenate([(labels[1:] == labels[:-1]).ravel(), (labels[:, 1:] == labels[:, :-1]).ravel()])
    assert same.mean() > 0.85


def test_map_rejects_empty_size():
    with pytest.raises(ValueError, match="map size"):
        syn.generate_map(0, 10, seed=0)


def test_generate_spectra_rejects_zero_count():
    with pytest.raises(ValueError, match="n_per_class"):
        syn.generate_spectra(0, seed=0)
