"""Cross-validation report: shape, sanity and the baseline on the same folds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanolens_spectra.science.preprocessing import SWCNT_REGIONS_CM1, PreprocessParams, preprocess
from nanolens_spectra.synthetic.swcnt import generate_spectra
from support import require_train_extra

require_train_extra()

from nanolens_spectra.training.cv import cross_validate  # noqa: E402
from nanolens_spectra.training.model import TrainParams  # noqa: E402

FAST = TrainParams(epochs=30)


@pytest.fixture(scope="module")
def small_set():
    d = generate_spectra(50, seed=31)
    x = preprocess(d.spectra, d.axis, PreprocessParams(regions=SWCNT_REGIONS_CM1))
    return x, d.labels, d.class_names


@pytest.fixture(scope="module")
def report(small_set):
    x, y, names = small_set
    return cross_validate(x, y, folds=5, seed=0, params=FAST, class_names=names)


def test_report_shape(report, small_set):
    x, y, names = small_set
    assert report.folds == 5 and report.n_items == 150 and report.class_names == names
    assert len(report.fold_accuracies) == len(report.baseline_fold_accuracies) == 5
    conf = np.array(report.confusion)
    assert conf.shape == (3, 3) and conf.sum() == 150
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(y))      # every spectrum tested once
    np.testing.assert_array_equal(np.array(report.baseline_confusion).sum(axis=1), np.bincount(y))
    assert report.accuracy_mean == pytest.approx(np.mean(report.fold_accuracies))
    assert report.accuracy_sd == pytest.approx(np.std(report.fold_accuracies, ddof=1))
    # The summed confusion matrix and the per-fold accuracies tell the same story (equal folds).
    assert np.trace(conf) / conf.sum() == pytest.approx(report.accuracy_mean)
    assert all(1 <= k <= 120 for k in report.n_components)
    assert report.chance_accuracy == pytest.approx(1 / 3)


def test_report_is_sane(report):
    # Clearly above chance (1/3) for both, yet the synthetic classes overlap: not perfect.
    assert report.accuracy_mean > 0.7
    assert report.baseline_accuracy_mean > 0.7
    assert report.accuracy_mean < 0.999


def test_report_serialises(report):
    d = json.loads(json.dumps(report.to_dict()))
    assert d["folds"] == 5 and len(d["confusion"]) == 3
    m = report.metrics()
    assert set(m) >= {"cv_accuracy_mean", "cv_accuracy_sd", "cv_folds", "n_spectra",
                      "baseline_logreg_accuracy_mean"}
    assert all(isinstance(v, int | float) for v in m.values())


def test_cv_is_reproducible(small_set, report):
    x, y, names = small_set
    again = cross_validate(x, y, folds=5, seed=0, params=FAST, class_names=names)
    assert again == report


def test_grouped_cv_runs(small_set):
    x, y, names = small_set
    groups = np.arange(y.size) // 3            # triplets stay together
    r = cross_validate(x, y, folds=3, seed=0, params=TrainParams(epochs=5), class_names=names, groups=groups)
    assert r.grouped and np.array(r.confusion).sum() == y.size


def test_cv_rejects_too_few_per_class(small_set):
    x, y, names = small_set
    keep = np.concatenate([np.flatnonzero(y == 0)[:4], np.flatnonzero(y == 1)])
    with pytest.raises(ValueError, match="fewer than the 5 folds"):
        cross_validate(x[keep], y[keep], folds=5, class_names=names)


def test_cv_rejects_a_single_class(small_set):
    x, y, _ = small_set
    with pytest.raises(ValueError, match="at least 2 classes"):
        cross_validate(x[y == 0], y[y == 0], folds=5)
