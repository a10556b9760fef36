"""The movie generator's physics: diffusion, etching, assembly, entering and leaving, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from nanolens_lpem.science import dynamics
from nanolens_lpem.synthetic.movies import MovieParams, frames, generate


def truth_table(truth) -> dict[str, np.ndarray]:
    rows = [(f.index, t, p[0], p[1], 2 * r) for f in truth for t, p, r in zip(f.tracks, f.positions, f.radii,
                                                                             strict=True)]
    arr = np.array(rows, float)
    return {"frame": arr[:, 0].astype(int), "track": arr[:, 1].astype(int), "row": arr[:, 2], "col": arr[:, 3],
            "diameter": arr[:, 4]}


@pytest.mark.parametrize("d", [0.5, 2.0])
def test_mean_squared_displacement_grows_as_4_d_t(d):
    params = MovieParams(shape=(160, 160), n_frames=120, n_particles=30, diffusion=d, margin=8, radius_range=(3, 4))
    truth = list(frames(params, seed=11))
    table = truth_table(truth)
    res = dynamics.diffusion(table, max_lag=10)
    assert res.n_steps > 2000
    assert res.d == pytest.approx(d, rel=0.1)
    assert res.d_low < d < res.d_high or abs(res.d - d) / d < 0.05
    assert res.msd_d == pytest.approx(d, rel=0.25)


def test_etching_shrinks_and_dissolves_particles():
    params = MovieParams(n_frames=40, n_particles=10, radius_range=(5, 6), etch_rate=0.1, min_radius=2.5,
                         diffusion=0.1)
    truth = list(frames(params, seed=2))
    mean_r = [f.radii.mean() for f in truth if f.radii.size]
    assert mean_r[-1] < mean_r[0] - 2.0
    assert truth[-1].tracks.size < truth[0].tracks.size  # dissolved ones leave no label


def test_sticking_particles_form_clusters_that_move_together():
    params = MovieParams(shape=(96, 96), n_frames=150, n_particles=20, radius_range=(4, 5), diffusion=1.5,
                         stick_probability=1.0, interaction=0.5, margin=4)
    truth = list(frames(params, seed=5))
    table = truth_table(truth)
    c = dynamics.clusters(table, len(truth))
    assert c["max_cluster_size"][-10:].mean() > c["max_cluster_size"][:5].mean() + 1
    assert c["coordination"][-10:].mean() > c["coordination"][:5].mean()


def test_particles_enter_and_leave_the_field():
    params = MovieParams(shape=(64, 64), n_frames=200, n_particles=20, diffusion=4.0, margin=24)
    truth = list(frames(params, seed=9))
    seen = [set(f.tracks.tolist()) for f in truth]
    assert seen[-1] - seen[0] and seen[0] - seen[-1]


def test_labels_are_track_ids_and_the_seed_fixes_the_movie():
    params = MovieParams(n_frames=5, contrast=0.4)
    a_img, a_lab, truth = generate(params, seed=3)
    b_img, _, _ = generate(params, seed=3)
    c_img, _, _ = generate(params, seed=4)
    assert np.array_equal(a_img, b_img) and not np.array_equal(a_img, c_img)
    for f in truth:
        assert set(np.unique(f.labels[f.labels > 0]).tolist()) == set(f.tracks.tolist())
    # particles are darker than the liquid (bright-field contrast) at the dose's counting noise
    assert a_img[a_lab > 0].mean() < 0.9 * a_img[a_lab == 0].mean()
