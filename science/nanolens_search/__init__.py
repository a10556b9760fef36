"""Nearest neighbours among L2-normalised embedding vectors: the exact reference search that the
gateway's SEM collections serve and the benchmarks time. It depends on numpy alone."""

from __future__ import annotations

import numpy as np


def top_k(matrix: np.ndarray, query: np.ndarray, k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``matrix`` (N x D, L2-normalised) most similar to ``query`` (D), best first, with
    their cosine similarities; row ``exclude`` (the query itself) is left out."""
    scores = matrix @ query.astype(matrix.dtype)
    if 0 <= exclude < len(scores):
        scores[exclude] = -np.inf
    k = min(k, len(scores) - (1 if 0 <= exclude < len(scores) else 0))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = part[np.argsort(-scores[part], kind="stable")]
    return order, scores[order]
