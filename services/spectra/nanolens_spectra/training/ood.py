"""Calibration of the out-of-domain score on held-out in-domain spectra.

The classifier's own PCA (fitted on the L2-normalised training spectra) describes what the model
has seen. Two classical statistics of multivariate process control say how far a spectrum is
from it: Hotelling's T^2 (the squared whitened scores summed: far along the directions the
training spectra vary in) and Q (the squared residual outside the PCA subspace: a shape the
training spectra never had). The score is

    score = max(T^2 / t2_limit, Q / q_limit) / threshold

with ``t2_limit`` and ``q_limit`` the ``LIMIT_QUANTILE`` quantiles of held-out in-domain spectra
and ``threshold`` the ``1 - FALSE_POSITIVE_RATE`` quantile of ``max(...)`` on the same spectra, so
that a score above 1 is out of domain and about 1 % of spectra like the training data are flagged.

The held-out spectra are the cross-validation's out-of-fold spectra: each is scored by the fold
model that did not train on it (``CVReport.out_of_fold_ood``), so calibrating costs no extra
training and uses no data the model was not already evaluated on. The manifest keeps
``N_QUANTILES`` quantiles of the calibration scores, so that a served score can be read as a
percentile of spectra like the training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FALSE_POSITIVE_RATE = 0.01
LIMIT_QUANTILE = 0.995
N_QUANTILES = 101  # 0, 1, ..., 100 %
METHOD = ("max(T^2 / t2_limit, Q / q_limit) / threshold in the model's PCA of the L2-normalised input "
          "(T^2: squared whitened PCA scores; Q: squared residual outside the PCA subspace); above 1: out of domain")


def raw_scores(statistics: np.ndarray, t2_limit: float, q_limit: float) -> np.ndarray:
    """max(T^2 / t2_limit, Q / q_limit) for (N, 2) statistics."""
    stats = np.asarray(statistics, dtype=np.float64)
    return np.maximum(stats[:, 0] / t2_limit, stats[:, 1] / q_limit)


def calibrate(statistics: np.ndarray, source: str, false_positive_rate: float = FALSE_POSITIVE_RATE,
              limit_quantile: float = LIMIT_QUANTILE) -> dict[str, Any]:
    """The manifest's ``out_of_domain`` block from held-out (N, 2) T^2, Q statistics.

    ``source`` says which spectra they are (provenance). Raises ValueError for fewer than 20
    spectra or degenerate statistics."""
    stats = np.asarray(statistics, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != 2 or len(stats) < 20:
        raise ValueError(f"out-of-domain calibration needs at least 20 held-out spectra, got {len(stats)}")
    if not np.isfinite(stats).all():
        raise ValueError("out-of-domain statistics contain NaN or Inf")
    t2_limit = float(np.quantile(stats[:, 0], limit_quantile))
    q_limit = float(np.quantile(stats[:, 1], limit_quantile))
    if t2_limit <= 0 or q_limit <= 0:
        raise ValueError("out-of-domain limits are zero: the held-out spectra are all identical")
    raw = raw_scores(stats, t2_limit, q_limit)
    threshold = float(np.quantile(raw, 1.0 - false_positive_rate))
    scores = raw / threshold
    quantiles = np.quantile(scores, np.linspace(0.0, 1.0, N_QUANTILES))
    return {
        "method": METHOD,
        "output": "ood_score",
        "t2_limit": round(t2_limit, 6),
        "q_limit": round(q_limit, 8),
        "limit_quantile": limit_quantile,
        "threshold": round(threshold, 6),
        "false_positive_rate": false_positive_rate,
        "score_quantiles": [round(float(v), 6) for v in quantiles],
        "calibration": {"source": source, "n_items": int(len(stats)),
                        "flagged": int((scores > 1.0).sum())},
    }
