"""Occlusion weights of the size distribution (nanolens_tem.science.occlusion)."""

import numpy as np
import pytest
from skimage.draw import disk

from nanolens_tem.science.occlusion import OVERLAP_EDGES, SIZE_EDGES, DetectionModel, found_context, truth_context
from nanolens_tem.science.segmentation import geometric_stats


def _labels(shape, discs):
    """Label image of discs (row, col, r) painted in order: later ones cover earlier ones."""
    lab = np.zeros(shape, np.int32)
    for k, (r, c, rad) in enumerate(discs, start=1):
        lab[disk((r, c), rad, shape=shape)] = k
    return lab


def test_weighted_geometric_stats_equal_repeating_the_particles():
    d = np.random.default_rng(0).lognormal(3.0, 0.3, 40)
    w = np.ones(40)
    w[:7] = 3.0
    repeated = np.r_[d, d[:7], d[:7]]
    assert geometric_stats(d, w) == pytest.approx(geometric_stats(repeated), rel=1e-12)
    assert geometric_stats(d, np.ones(40)) == pytest.approx(geometric_stats(d), rel=1e-12)
    for bad in (np.ones(39), np.r_[np.ones(39), 0.0], np.r_[np.ones(39), np.nan]):
        with pytest.raises(ValueError, match="weights"):
            geometric_stats(d, bad)


def test_inverse_recall_weights_undo_a_size_dependent_loss():
    """Horvitz-Thompson: drop small particles more often, weight the kept ones by 1 / recall."""
    rng = np.random.default_rng(1)
    d = rng.lognormal(np.log(20), np.log(1.3), 20000)
    recall = np.where(d < 17, 0.4, np.where(d < 22, 0.7, 0.95))
    kept = rng.random(d.size) < recall
    g0, s0 = geometric_stats(d)
    g_found, _ = geometric_stats(d[kept])
    g_w, s_w = geometric_stats(d[kept], 1 / recall[kept])
    assert g_found / g0 - 1 > 0.03  # the loss biases the found particles' GMD
    assert abs(g_w / g0 - 1) < 0.005 and abs(s_w / s0 - 1) < 0.01


def test_found_context_reads_relative_size_and_how_much_the_agglomerate_overlaps():
    # an isolated disc sized right owns its whole disc; a pair where the second covers half the
    # first owns less; the sizes are relative to the image's geometric mean
    lab = _labels((120, 200), [(60, 30, 12), (60, 120, 15), (60, 135, 15)])
    d = np.array([24.0, 30.0, 30.0])
    ctx, groups, per_group = found_context(lab, d)
    assert ctx[:, 0] == pytest.approx(np.log(d) - np.log(d).mean())
    assert ctx[0, 1] == pytest.approx(1.0, abs=0.05)
    assert ctx[1, 1] == ctx[2, 1] < 0.85
    assert groups.max() == 2 and per_group[0] == 1.0
    # an instance the method could not size leaves the others' relative sizes alone
    unsized = found_context(lab, np.array([24.0, 30.0, 0.0]))[0]
    assert unsized[:2, 0] == pytest.approx(np.log([24.0, 30.0]) - np.log([24.0, 30.0]).mean())


def test_truth_context_puts_a_true_particle_in_the_group_that_covers_most_of_it():
    shape = (120, 240)
    pred = _labels(shape, [(60, 30, 12), (60, 120, 15), (60, 135, 15)])
    pred_d = np.array([24.0, 30.0, 30.0])
    # true particles: the isolated one, one under the pair (mostly covered by it), one no group covers
    truth = _labels(shape, [(60, 30, 12), (60, 125, 10), (20, 210, 6)])
    rows = truth_context(truth, np.array([24.0, 20.0, 12.0]), np.array([True, False, False]), pred, pred_d)
    ctx, _, _ = found_context(pred, pred_d)
    assert rows[:, 2].tolist() == [1.0, 0.0, 0.0]
    assert rows[0, 1] == pytest.approx(ctx[0, 1]) and rows[1, 1] == pytest.approx(ctx[1, 1])
    assert rows[2, 1] == 1.0  # no group: unoccluded
    assert rows[:, 0] == pytest.approx(np.log([24.0, 20.0, 12.0]) - np.log(pred_d).mean())


def _rows(rng, n, recall_of):
    x = rng.normal(0, 0.25, n)
    share = rng.uniform(0.5, 1.0, n)
    found = rng.random(n) < recall_of(x, share)
    return np.c_[x, share, found]


def test_detection_model_fits_the_recall_per_cell_and_weights_by_its_inverse():
    rng = np.random.default_rng(2)
    rows = _rows(rng, 40000, lambda x, s: np.where((x < 0) & (s < OVERLAP_EDGES[0]), 0.4, 0.9))
    model = DetectionModel.fit([rows[:20000], rows[20000:]])
    assert model.recall.shape == (len(SIZE_EDGES) + 1, len(OVERLAP_EDGES) + 1)
    assert model.n_particles.sum() == 40000
    assert model.recall[0, 0] == pytest.approx(0.4, abs=0.05) and model.recall[-1, -1] == pytest.approx(0.9, abs=0.03)
    again = DetectionModel.from_json(model.to_json())
    assert again.recall == pytest.approx(model.recall, abs=1e-4)
    # a small particle in a heavily overlapping pair gets 1 / 0.4; a large isolated one 1 / 0.9
    lab = _labels((120, 260), [(60, 120, 15), (60, 126, 15), (60, 220, 20)])
    d = np.array([30.0, 30.0, 40.0])
    w = model.weights(lab, d)
    assert w[2] == pytest.approx(1 / model.recall[-1, -1])
    ctx, _, _ = found_context(lab, d)
    cell = np.digitize(ctx[0, 0], SIZE_EDGES), np.digitize(ctx[0, 1], OVERLAP_EDGES)
    assert ctx[0, 0] < 0 and cell[1] == 0  # smaller than the mean, in a pair owning under 70 % of its discs
    assert w[0] == pytest.approx(1 / model.recall[cell]) and w[0] > 2.0
    assert model.weights(lab, np.array([30.0, 30.0, 0.0]))[2] == 1.0  # unsized: not in the distribution


def test_detection_model_refuses_what_it_cannot_stand_on():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="fewer than 20"):
        DetectionModel.fit([_rows(rng, 200, lambda x, s: np.full(x.shape, 0.8))])
    good = DetectionModel.fit([_rows(rng, 20000, lambda x, s: np.full(x.shape, 0.8))]).to_json()
    with pytest.raises(ValueError, match="does not fit"):
        DetectionModel.from_json({**good, "size_edges": [0.0]})
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        DetectionModel.from_json({**good, "recall": np.zeros_like(good["recall"]).tolist()})
