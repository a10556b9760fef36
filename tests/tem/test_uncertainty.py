"""95 % bootstrap intervals of the GMD and the GSD: they cover the truth about 95 % of the time."""

import math

import numpy as np
import pytest

from nanolens_tem.science.segmentation import bootstrap_ci, geometric_stats


def test_the_intervals_cover_the_true_gmd_and_gsd_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    gmd_hits = gsd_hits = 0
    trials = 300
    for _ in range(trials):
        d = np.exp(rng.normal(math.log(20.0), math.log(1.3), 60))
        (g0, g1), (s0, s1) = bootstrap_ci(d, resamples=400)
        gmd_hits += g0 <= 20.0 <= g1
        gsd_hits += s0 <= 1.3 <= s1
    # binomial sd at 95 % over 300 trials: 1.3 %; percentile intervals of 60 particles run a little narrow
    assert 0.88 <= gmd_hits / trials <= 0.99 and 0.85 <= gsd_hits / trials <= 0.99


def test_an_interval_holds_its_estimate_narrows_with_more_particles_and_is_reproducible():
    rng = np.random.default_rng(1)
    small, large = (np.exp(rng.normal(3.0, 0.3, n)) for n in (30, 3000))
    (g0, g1), (s0, s1) = bootstrap_ci(small)
    gmd, gsd = geometric_stats(small)
    assert g0 < gmd < g1 and s0 < gsd < s1
    (h0, h1), _ = bootstrap_ci(large)
    assert (h1 - h0) / geometric_stats(large)[0] < (g1 - g0) / gmd / 5  # about sqrt(100) narrower
    assert bootstrap_ci(small) == bootstrap_ci(small)


def test_weights_move_the_interval_with_the_estimate():
    d = np.array([10.0, 10.5, 11.0, 20.0, 21.0, 22.0] * 5)
    w = np.where(d < 15, 3.0, 1.0)  # the small ones stand for three each
    (plain, _), (weighted, _) = bootstrap_ci(d)[0], bootstrap_ci(d, w)[0]
    assert weighted < plain
    assert bootstrap_ci(d, w)[0][0] < geometric_stats(d, w)[0] < bootstrap_ci(d, w)[0][1]


@pytest.mark.parametrize("d", [np.array([]), np.array([12.0]), np.array([0.0, 12.0])])
def test_under_two_particles_there_is_no_interval(d):
    (g0, g1), (s0, s1) = bootstrap_ci(d)
    assert all(math.isnan(x) for x in (g0, g1, s0, s1))


def test_the_summary_prints_the_intervals_beside_the_gmd_and_gsd():
    from nanolens_gateway.adapters.tem import summarise

    result = {"method": "cnn", "n_agglomerates": 3,
              "image": {"width": 512, "height": 512, "pixel_size_nm": 0.5, "pixel_size_source": "request",
                        "info_bar_rows": 0},
              "distribution": {"count": 40, "gmd_nm": 12.3, "gmd_px": 24.6, "gsd": 1.2, "gmd_nm_ci": [11.8, 12.9],
                               "gmd_px_ci": [23.6, 25.8], "gsd_ci": [1.15, 1.26]}}
    assert summarise(result)[1] == "  GMD 12.3 nm (95 % CI 11.8-12.9), GSD 1.200 (1.150-1.260)"
    result["distribution"].update(gmd_nm=None, gmd_nm_ci=None, gsd_ci=None)
    assert summarise(result)[1] == "  GMD 24.6 px (95 % CI 23.6-25.8), GSD 1.200"
