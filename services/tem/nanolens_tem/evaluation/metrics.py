"""Scoring of particle instance segmentations and size distributions (pure numpy)."""

from __future__ import annotations

import numpy as np

from nanolens_tem.science.segmentation import geometric_stats

__all__ = ["iou_matrix", "match_instances", "instance_f1", "equivalent_diameters", "psd_errors", "drop_small",
           "found_truth"]


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every ground-truth and predicted instance of two label images.

    Returns a ``(n_gt, n_pred)`` array; labels are renumbered internally (0 is background).
    """
    g_ids, g = np.unique(gt, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    g, p = g.ravel(), p.ravel()
    inter = np.zeros((len(g_ids), len(p_ids)), np.int64)
    np.add.at(inter, (g, p), 1)
    area_g, area_p = inter.sum(1), inter.sum(0)
    union = area_g[:, None] + area_p[None, :] - inter
    iou = inter / np.maximum(union, 1)
    gi = slice(1, None) if g_ids[0] == 0 else slice(None)
    pi = slice(1, None) if p_ids[0] == 0 else slice(None)
    return iou[gi, pi]


def match_instances(gt: np.ndarray, pred: np.ndarray, thresh: float = 0.5) -> tuple[int, int, int]:
    """True positives, false positives and false negatives at IoU > ``thresh``.

    At ``thresh >= 0.5`` a match is unique, so no assignment problem needs solving.
    """
    iou = iou_matrix(gt, pred)
    n_gt, n_pred = iou.shape
    if n_gt == 0 or n_pred == 0:
        return 0, n_pred, n_gt
    tp = int((iou > thresh).any(1).sum()) if thresh >= 0.5 else _greedy(iou, thresh)
    return tp, n_pred - tp, n_gt - tp


def found_truth(gt: np.ndarray, pred: np.ndarray, n_truth: int, thresh: float = 0.5) -> np.ndarray:
    """Per ground-truth particle ``k`` (label ``k + 1``; ``n_truth`` of them, hidden ones included):
    whether a predicted instance matches it at IoU > ``thresh`` (>= 0.5, so matches are unique)."""
    found = np.zeros(n_truth, bool)
    ids = np.unique(gt)
    ids = ids[ids > 0]
    iou = iou_matrix(gt, pred)
    if iou.size:
        found[ids - 1] = iou.max(1) > thresh
    return found


def _greedy(iou: np.ndarray, thresh: float) -> int:
    iou = iou.copy()
    tp = 0
    while iou.size and iou.max() > thresh:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        iou[i, :] = 0
        iou[:, j] = 0
        tp += 1
    return tp


def instance_f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) (1 when there is nothing to find and nothing found)."""
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2 * tp / den


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-circle diameters (px) ``2 sqrt(area / pi)`` of the instances of a label image."""
    area = np.bincount(labels.ravel())[1:]
    area = area[area > 0]
    return 2.0 * np.sqrt(area / np.pi)


def psd_errors(d_pred: np.ndarray, d_true: np.ndarray, w_pred: np.ndarray | None = None) -> tuple[float, float]:
    """Relative errors (fractions, signed) of GMD and GSD of ``d_pred`` (each standing for
    ``w_pred`` particles, 1 when left out) against ``d_true``.

    The GSD error is taken on the GSD itself (as in Frei & Kruis 2018), not on ``ln GSD``.
    """
    g1, s1 = geometric_stats(d_pred, w_pred)
    g0, s0 = geometric_stats(d_true)
    return (g1 - g0) / g0, (s1 - s0) / s0


def drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """The label image without instances of fewer than ``min_area`` px (set to background)."""
    if min_area <= 0:
        return labels
    area = np.bincount(labels.ravel())
    small = area < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)
