"""Instance segmentation scores: IoU matching, instance F1, count error, pixel IoU."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n_truth, n_pred) IoU of every pair of instances (labels 1..n, 0 background)."""
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    nt, npred = int(t.max(initial=0)), int(p.max(initial=0))
    inter = np.bincount(t * (npred + 1) + p, minlength=(nt + 1) * (npred + 1)).reshape(nt + 1, npred + 1)
    at, ap = inter.sum(1), inter.sum(0)
    union = at[:, None] + ap[None, :] - inter
    return (inter / np.maximum(union, 1))[1:, 1:]


def match(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict:
    """One-to-one matches with IoU >= ``threshold``: tp, fp, fn, instance F1, count error, pixel IoU."""
    from skimage.segmentation import relabel_sequential

    truth, _, _ = relabel_sequential(truth.astype(np.int64))
    pred, _, _ = relabel_sequential(pred.astype(np.int64))
    iou = iou_matrix(truth, pred)
    tp = 0
    if iou.size:
        r, c = linear_sum_assignment(-iou)
        tp = int((iou[r, c] >= threshold).sum())
    nt, npred = iou.shape
    fg_t, fg_p = truth > 0, pred > 0
    union = (fg_t | fg_p).sum()
    return {"tp": tp, "fp": npred - tp, "fn": nt - tp, "n_truth": nt, "n_pred": npred,
            "pixel_iou": float((fg_t & fg_p).sum() / union) if union else 1.0}


def summarise(rows: list[dict]) -> dict:
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    nt, npred = sum(r["n_truth"] for r in rows), sum(r["n_pred"] for r in rows)
    return {"n_images": len(rows), "n_truth": nt, "n_pred": npred,
            "f1_iou50": 2 * tp / max(2 * tp + fp + fn, 1), "count_err": (npred - nt) / max(nt, 1),
            "pixel_iou": float(np.mean([r["pixel_iou"] for r in rows])) if rows else float("nan")}
