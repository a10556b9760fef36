"""Preprocessing: resampling, spike removal, baseline correction, the pipeline and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanolens_spectra.science import preprocessing as pp
from nanolens_spectra.synthetic.swcnt import generate_spectra


def lorentz(x, centre, hwhm, height):
    return height / (1.0 + ((x - centre) / hwhm) ** 2)


# ----------------------------------------------------------------------------- resample


def test_resample_is_exact_on_linear_data():
    rng = np.random.default_rng(0)
    src = np.sort(rng.uniform(100, 3000, 700))          # irregular spacing
    src[0], src[-1] = 100.0, 3000.0
    slopes = np.array([[0.5], [-2.0], [0.0]])
    y = (3.0 + slopes * src[None, :]).astype(np.float32)
    dst = np.linspace(150, 2950, 333)
    out = pp.resample(y, src, dst)
    assert out.dtype == np.float32 and out.shape == (3, 333)
    np.testing.assert_allclose(out, 3.0 + slopes * dst[None, :], rtol=1e-5, atol=1e-3)


def test_resample_accepts_a_decreasing_axis():
    src = np.linspace(4000, 400, 900)                   # FTIR order
    y = (10.0 + 0.01 * src)[None, :].astype(np.float32)
    dst = np.linspace(500, 3900, 250)
    np.testing.assert_allclose(pp.resample(y, src, dst)[0], 10.0 + 0.01 * dst, rtol=1e-5)


def test_resample_identity_returns_a_copy():
    y = np.arange(20, dtype=np.float32).reshape(2, 10)
    x = np.arange(10.0)
    out = pp.resample(y, x, x)
    np.testing.assert_array_equal(out, y)
    assert out is not y


def test_resample_rejects_axes_that_barely_overlap():
    y = np.ones((2, 50), dtype=np.float32)
    with pytest.raises(ValueError, match="covers only"):
        pp.resample(y, np.linspace(100, 1000, 50), np.linspace(800, 3000, 100))


def test_resample_small_edge_gap_holds_edge_values():
    y = np.linspace(0, 1, 100, dtype=np.float32)[None, :]
    out = pp.resample(y, np.linspace(110, 3000, 100), np.linspace(100, 3000, 200))
    assert out[0, 0] == pytest.approx(0.0)


def test_resample_rejects_mismatched_axis_length():
    with pytest.raises(ValueError, match="channels"):
        pp.resample(np.ones((2, 10), np.float32), np.arange(11.0), np.arange(5.0))


# ----------------------------------------------------------------------------- spikes


@pytest.fixture
def peaky():
    """Clean bands 2-4 channels wide (one very strong), mild noise, on a sloped background."""
    x = np.linspace(100, 3000, 1024)
    rng = np.random.default_rng(1)
    clean = (200 + 0.05 * x + lorentz(x, 282, 4, 300) + lorentz(x, 1591, 7, 50000)
             + lorentz(x, 1570, 12, 15000) + lorentz(x, 2680, 30, 8000))
    y = np.tile(clean, (4, 1)) + rng.normal(0, 5, (4, x.size))
    return x, y.astype(np.float32), clean


def test_spike_mask_finds_injected_spikes_only(peaky):
    x, y, _ = peaky
    spiky = y.copy()
    spiky[0, 500] += 3000                     # one channel
    spiky[1, 700:702] += 1500                 # two channels
    spiky[2, 555] += 5000                     # on the upper flank of the strong G+ band
    mask = pp.spike_mask(spiky)
    expected = np.zeros_like(mask)
    expected[0, 500] = expected[1, 700] = expected[1, 701] = expected[2, 555] = True
    np.testing.assert_array_equal(mask, expected)


def test_remove_spikes_leaves_real_peaks_untouched(peaky):
    x, y, clean = peaky
    spiky = y.copy()
    spiky[0, 500] += 3000
    spiky[3, 100:102] += 2000
    out = pp.remove_spikes(spiky)
    touched = out != spiky
    assert set(map(tuple, np.argwhere(touched))) == {(0, 500), (3, 100), (3, 101)}
    # Replaced by interpolation between the neighbours: within a few noise sd (5) of the truth,
    # also on the steep flank of the G- band (channel 500, ~1517 cm^-1).
    assert abs(out[0, 500] - clean[500]) < 20
    assert np.all(np.abs(out[3, 100:102] - clean[100:102]) < 20)


def test_strong_sharp_bands_are_not_spikes():
    # Noise-free, huge, 1.5-channel half-width bands on and between grid points.
    x = np.arange(400, dtype=np.float64)
    y = np.stack([lorentz(x, 200.0, 1.5, 1e6), lorentz(x, 200.5, 1.5, 1e6)]).astype(np.float32)
    assert not pp.spike_mask(y).any()


def test_noise_sd_is_robust():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 3.0, (50, 1000)).astype(np.float32)
    y[:, 500] += 1000
    assert np.median(pp.noise_sd(y)) == pytest.approx(3.0, rel=0.05)


# ----------------------------------------------------------------------------- baseline


def test_baseline_recovers_a_known_polynomial_baseline():
    x = np.linspace(100, 3000, 1024)
    t = (x - 1550) / 1450
    rng = np.random.default_rng(3)
    base = 2000 + 800 * t - 600 * t**2 + 300 * t**3         # within the degree-5 model
    peaks = lorentz(x, 1591, 7, 1000) + lorentz(x, 1350, 22, 150) + lorentz(x, 2680, 30, 400)
    y = (base + peaks + rng.normal(0, 10, (20, x.size))).astype(np.float32)
    est = pp.fit_baseline(y, x, degree=5, iterations=20)
    err = est - base
    assert np.sqrt(np.mean(err**2)) < 20        # 2 % of the G height, ~2 noise sd
    assert np.abs(err).max() < 60
    corrected = pp.baseline_correct(y, x, 5, 20)
    assert abs(np.median(corrected[:, (x > 1800) & (x < 2400)])) < 15


def test_baseline_recovers_a_fluorescence_like_baseline():
    x = np.linspace(100, 3000, 1024)
    base = 3000 * np.exp(-(x - 100) / 900) + 500 + 0.2 * x   # not a polynomial
    y = (base + lorentz(x, 1591, 7, 2000) + lorentz(x, 250, 4, 500))[None, :].astype(np.float32)
    est = pp.fit_baseline(y, x, degree=5, iterations=20)[0]
    assert np.sqrt(np.mean((est - base) ** 2)) < 0.02 * 2000


def test_baseline_does_not_depend_on_batch_composition():
    d = generate_spectra(4, seed=4)
    whole = pp.fit_baseline(d.spectra, d.axis)
    single = pp.fit_baseline(d.spectra[5:6], d.axis)
    np.testing.assert_allclose(whole[5], single[0], rtol=1e-4, atol=1e-2)


def test_baseline_rejects_too_high_degree():
    with pytest.raises(ValueError, match="degree"):
        pp.fit_baseline(np.ones((1, 8), np.float32), np.arange(8.0), degree=8)


# ----------------------------------------------------------------------------- params and pipeline


def test_params_round_trip_through_json():
    p = pp.PreprocessParams(regions=pp.SWCNT_REGIONS_CM1, min_snr=5.0, baseline_degree=4)
    q = pp.PreprocessParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    explicit = pp.PreprocessParams(axis_values=(100.0, 200.0, 400.0))
    assert pp.PreprocessParams.from_dict(json.loads(json.dumps(explicit.to_dict()))) == explicit
    np.testing.assert_array_equal(explicit.model_axis(), [100.0, 200.0, 400.0])


def test_params_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown preprocessing parameters: colour"):
        pp.PreprocessParams.from_dict({"colour": "blue"})
    with pytest.raises(ValueError):
        pp.PreprocessParams(axis_start=10, axis_stop=5)
    with pytest.raises(ValueError, match="region"):
        pp.PreprocessParams(regions=((500, 400),))


def test_preprocess_output_matches_params():
    d = generate_spectra(5, seed=6)
    params = pp.PreprocessParams(regions=pp.SWCNT_REGIONS_CM1)
    out = pp.preprocess(d.spectra, d.axis, params)
    assert out.dtype == np.float32 and out.shape == (15, params.n_features)
    assert params.output_axis().shape == (params.n_features,)
    # The strongest feature is the G+ band, and the fluorescence offset is gone.
    ax = params.output_axis()
    assert np.all(np.abs(ax[out.argmax(axis=1)] - 1593) < 8)
    edge = (ax > 1700) & (ax < 1750)
    assert np.all(np.abs(np.median(out[:, edge], axis=1)) < 0.05 * out.max(axis=1))


def test_preprocess_resamples_foreign_axes():
    d = generate_spectra(2, seed=7)
    params = pp.PreprocessParams(axis_start=150, axis_stop=2900, axis_num=500, despike=False)
    out = pp.preprocess(d.spectra, d.axis, params)
    assert out.shape == (6, 500)


@pytest.mark.parametrize(
    ("spectra", "axis", "message"),
    [
        (np.ones(10, np.float32), np.arange(10.0), "2-D"),
        (np.ones((0, 10), np.float32), np.arange(10.0), "empty"),
        (np.ones((2, 10), np.float32), np.arange(9.0), "9 points but the spectra have 10 channels"),
        (np.array([[1.0, np.nan, 2.0]] * 2), np.arange(3.0), "NaN or Inf"),
        (np.array([[1.0, np.inf, 2.0]] * 2), np.arange(3.0), "first at spectrum 0, channel 1"),
        (np.array([["a", "b"]]), np.arange(2.0), "numeric"),
        (np.ones((2, 3), np.float32), np.array([1.0, 3.0, 2.0]), "strictly"),
    ],
)
def test_preprocess_names_the_problem(spectra, axis, message):
    with pytest.raises(ValueError, match=message):
        pp.preprocess(spectra, axis, pp.PreprocessParams())


def test_degenerate_mask_flags_signal_free_spectra():
    rng = np.random.default_rng(8)
    x = np.linspace(0, 1, 500)
    flat = rng.normal(0, 1, (3, 500))
    peaked = flat + lorentz(x, 0.5, 0.01, 50)
    mask = pp.degenerate_mask(np.vstack([flat, peaked, np.zeros((1, 500))]).astype(np.float32), 5.0)
    assert mask.tolist() == [True, True, True, False, False, False, True]


def test_spike_removal_on_generated_spectra_against_ground_truth():
    """The generator's random stream does not depend on spike heights, so zero-height spikes
    give the same spectra without cosmic rays: exact ground truth."""
    from dataclasses import replace

    from nanolens_spectra.synthetic.swcnt import NUISANCE

    with_spikes = generate_spectra(200, seed=9).spectra
    without = generate_spectra(200, seed=9, nuisance=replace(NUISANCE, spike_counts=(0.0, 0.0))).spectra
    truth = with_spikes != without
    assert 10 < truth.any(axis=1).sum() < 60                       # ~5 % of 600 spectra
    found = pp.spike_mask(with_spikes)
    hits = (found & truth).sum()
    assert hits / truth.sum() > 0.9                                  # recall
    assert hits / found.sum() > 0.9                                  # precision
    cleaned = pp.remove_spikes(with_spikes)
    assert np.median(np.abs(cleaned - without)[truth]) < 200         # noise sd ~100 counts


def test_science_package_does_not_import_torch():
    """The serving image has no torch: the science code must not need it."""
    import subprocess
    import sys

    code = ("import sys, nanolens_spectra.science.preprocessing, nanolens_spectra.synthetic.swcnt; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
