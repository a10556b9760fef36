"""Stratified k-fold cross-validation of the reference classifier, with a baseline.

Gravely & Roxbury validated their network with 10-fold cross-validation, so that is the number
reported here. Beside it, on exactly the same folds and the same preprocessed, normalised
spectra, a multinomial logistic regression (standardised features, default regularisation):
if the network does not beat a linear model, the network is not earning its keep.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nanolens_spectra.training.model import TrainParams, fit, normalise, ood_statistics, predict_proba


@dataclass(frozen=True)
class CVReport:
    """Cross-validation results. Accuracies are fractions (0..1); ``*_sd`` are sample standard
    deviations over folds; confusion matrices are summed over folds (rows = true class)."""

    class_names: tuple[str, ...]
    folds: int
    n_items: int
    class_counts: tuple[int, ...]
    fold_accuracies: tuple[float, ...]
    accuracy_mean: float
    accuracy_sd: float
    confusion: tuple[tuple[int, ...], ...]
    n_components: tuple[int, ...]
    baseline_fold_accuracies: tuple[float, ...]
    baseline_accuracy_mean: float
    baseline_accuracy_sd: float
    baseline_confusion: tuple[tuple[int, ...], ...]
    grouped: bool = False
    # (N, 2) Hotelling T^2 and Q of every spectrum under the fold model that did not train on it
    # (held-out in-domain statistics, for the out-of-domain calibration); not in to_dict().
    out_of_fold_ood: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of always answering the most frequent class."""
        return max(self.class_counts) / self.n_items

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("out_of_fold_ood", None)
        d["chance_accuracy"] = self.chance_accuracy
        return _jsonable(d)

    def metrics(self) -> dict[str, float | int]:
        """Flat numbers for a model manifest."""
        return {
            "cv_accuracy_mean": round(self.accuracy_mean, 6),
            "cv_accuracy_sd": round(self.accuracy_sd, 6),
            "cv_folds": self.folds,
            "n_spectra": self.n_items,
            "cv_pca_components_mean": round(float(np.mean(self.n_components)), 3),
            "baseline_logreg_accuracy_mean": round(self.baseline_accuracy_mean, 6),
            "baseline_logreg_accuracy_sd": round(self.baseline_accuracy_sd, 6),
            "chance_accuracy": round(self.chance_accuracy, 6),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def logistic_baseline() -> Any:
    """The baseline model: standardise features, then multinomial logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def cross_validate(spectra: np.ndarray, labels: np.ndarray, folds: int = 10, seed: int = 0,
                   params: TrainParams | None = None,
                   class_names: tuple[str, ...] | list[str] | None = None,
                   groups: np.ndarray | None = None, n_components: int | None = None) -> CVReport:
    """Stratified ``folds``-fold CV of ``fit`` (PCA refitted on every training fold) and of the
    logistic baseline on the same folds. ``spectra`` are preprocessed model inputs (N, C),
    ``labels`` integer class indices (N,). Folds are shuffled with ``seed``.

    ``groups`` (N,), if given, keeps all spectra of a group (e.g. the same molecule or the same
    cell) in one fold (StratifiedGroupKFold), so that the score is not inflated by near-copies
    of a test spectrum in the training fold.

    ``n_components``, if given, fixes the fold models' PCA size (instead of ``params.variance``):
    the bundle passes the full model's, so that the out-of-fold T^2 and Q are on the scale of the
    served model (``out_of_fold_ood``: both grow or shrink with the number of components)."""
    x = np.ascontiguousarray(spectra, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    k = int(y.max()) + 1 if class_names is None else len(class_names)
    names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(k))
    counts = np.bincount(y, minlength=k)
    if (counts > 0).sum() < 2:
        raise ValueError("cross-validation needs at least 2 classes")
    if counts[counts > 0].min() < folds:
        raise ValueError(
            f"class {names[int(np.argmin(np.where(counts > 0, counts, np.inf)))]!r} has "
            f"{counts[counts > 0].min()} spectra, fewer than the {folds} folds"
        )
    if groups is None:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
    else:
        if np.asarray(groups).shape != y.shape:
            raise ValueError(f"groups must have shape {y.shape}, got {np.asarray(groups).shape}")
        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, groups)
    acc, base_acc, comps = [], [], []
    conf = np.zeros((k, k), dtype=np.int64)
    base_conf = np.zeros((k, k), dtype=np.int64)
    xn = normalise(x)
    oof = np.zeros((y.size, 2))
    for fold, (train, test) in enumerate(splits):
        model = fit(x[train], y[train], names, params, seed=seed + fold, n_components=n_components)
        pred = predict_proba(model, x[test]).argmax(axis=1)
        oof[test] = ood_statistics(model, x[test])
        acc.append(float(np.mean(pred == y[test])))
        conf += confusion_matrix(y[test], pred, labels=np.arange(k))
        comps.append(model.n_components)
        base = logistic_baseline().fit(xn[train], y[train])
        base_pred = base.predict(xn[test])
        base_acc.append(float(np.mean(base_pred == y[test])))
        base_conf += confusion_matrix(y[test], base_pred, labels=np.arange(k))
    return CVReport(
        class_names=names, folds=folds, n_items=int(y.size),
        class_counts=tuple(int(c) for c in counts),
        fold_accuracies=tuple(acc), accuracy_mean=float(np.mean(acc)),
        accuracy_sd=float(np.std(acc, ddof=1)) if folds > 1 else 0.0,
        confusion=tuple(tuple(int(v) for v in row) for row in conf),
        n_components=tuple(comps),
        baseline_fold_accuracies=tuple(base_acc), baseline_accuracy_mean=float(np.mean(base_acc)),
        baseline_accuracy_sd=float(np.std(base_acc, ddof=1)) if folds > 1 else 0.0,
        baseline_confusion=tuple(tuple(int(v) for v in row) for row in base_conf),
        grouped=groups is not None, out_of_fold_ood=oof,
    )
