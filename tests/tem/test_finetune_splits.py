"""The real-image cross-validation's splits: every image scored by a model that never saw it, and
the learning curve's smaller training sets drawn inside the training folds."""

from __future__ import annotations

import numpy as np
import pytest

from support import require_train_extra

require_train_extra()

from nanolens_tem.training.finetune import folds_by_subset, training_subset  # noqa: E402

SUBSETS = np.array(["tetrahedra"] * 18 + ["nanoprisms"] * 12)  # the gold images' make-up


def test_folds_hold_each_subset_in_proportion():
    fold = folds_by_subset(SUBSETS, 3)
    for k in range(3):
        assert (SUBSETS[fold == k] == "tetrahedra").sum() == 6
        assert (SUBSETS[fold == k] == "nanoprisms").sum() == 4


@pytest.mark.parametrize("n", [2, 5, 10, 19, 20])
def test_training_subset_is_stratified_seeded_and_outside_the_scored_fold(n):
    fold = folds_by_subset(SUBSETS, 3)
    for k in range(3):
        train_idx = np.flatnonzero(fold != k)
        picked = training_subset(train_idx, SUBSETS, n, seed=k)
        assert len(picked) == n == len(set(picked.tolist()))
        assert not set(picked.tolist()) & set(np.flatnonzero(fold == k).tolist())
        tetra = (SUBSETS[picked] == "tetrahedra").sum()
        assert 1 <= tetra <= n - 1 and abs(tetra - 0.6 * n) < 1  # 12 of the 20 training images
        assert np.array_equal(picked, training_subset(train_idx, SUBSETS, n, seed=k))
    assert n == 20 or not np.array_equal(training_subset(np.flatnonzero(fold != 0), SUBSETS, n, seed=0),
                                         training_subset(np.flatnonzero(fold != 0), SUBSETS, n, seed=1))


@pytest.mark.parametrize("n", [0, 1, 21])
def test_training_subset_refuses_sizes_it_cannot_draw(n):
    with pytest.raises(ValueError, match="--n-train"):
        training_subset(np.flatnonzero(folds_by_subset(SUBSETS, 3) != 0), SUBSETS, n, seed=0)
