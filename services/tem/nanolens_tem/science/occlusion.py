"""Occlusion correction of a segmentation's size distribution (inverse-probability weights).

In an agglomerate, a particle that lies behind others for most of its disc is often not found,
and such particles are the smaller ones. The found particles' geometric mean diameter then comes
out high even when each found particle is sized right: for ``tem-unet`` 1.4.0 on the tuning
split (150 ``default`` images, 7 580 particles), the matched particles' sizes are unbiased (mean
log ratio +0.002), yet the GMD of the found ones is +3.6 % off that of all of them.

The correction weights each found particle by ``1 / p``, the probability that a particle like it
is found (Horvitz & Thompson 1952), so that the distribution stands for all particles, hidden
ones included. "Like it" means two things known both for a found particle and for a true one:

- its size relative to the image: ``log(d / GMD of the found particles)``;
- how much its agglomerate overlaps: the mean share of their own disc (instance area over
  ``pi d^2 / 4``, at most 1) that the found particles of its 8-connected group of particle pixels
  own. A true particle belongs to the group that covers most of it; one that no group covers
  counts as unoccluded (share 1).

Isolated, unoccluded particles thus keep weights near 1. ``p`` is the recall in each cell of a
(relative size x overlap) table, measured on calibration images drawn like the training images
(seeds of their own, none trained on; :mod:`nanolens_tem.training.calibrate`). A model's bundle
carries its table in the manifest's ``postprocessing``; the table depends on the network, since
it describes what that network misses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SIZE_EDGES", "OVERLAP_EDGES", "DetectionModel", "found_context", "truth_context"]

#: bins of log(d / image GMD of the found particles)
SIZE_EDGES = (-0.3, -0.15, 0.0, 0.15)
#: bins of the agglomerate's mean share of their own disc that its found particles own
OVERLAP_EDGES = (0.7, 0.8, 0.9)
EIGHT = np.ones((3, 3), bool)


def found_context(labels: np.ndarray, diameters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the occlusion model needs about each found instance.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels ``1..n`` (0 background).
    diameters : numpy.ndarray
        (n,) their diameters, px.

    Returns
    -------
    context : numpy.ndarray
        (n, 2): relative log size, and the mean owned share of the instance's agglomerate.
    groups : numpy.ndarray
        Agglomerate label image.
    per_group : numpy.ndarray
        Each agglomerate's mean owned share (index 0: none, 1).
    """
    n = len(diameters)
    groups, n_groups = ndi.label(labels > 0, structure=EIGHT)
    # every pixel of an instance lies in the same group, so any one of them names it
    group_of = np.zeros(n + 1, int)
    group_of[labels.ravel()] = groups.ravel()
    group_of = group_of[1:]
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:n + 1]
    raw = np.asarray(diameters, float)
    d = np.maximum(raw, 1e-9)
    owned = np.minimum(area / (np.pi * d**2 / 4), 1.0)
    per_group = np.ones(n_groups + 1)
    members = np.bincount(group_of, minlength=n_groups + 1)
    has = members > 0
    per_group[has] = np.bincount(group_of, weights=owned, minlength=n_groups + 1)[has] / members[has]
    per_group[0] = 1.0
    return np.c_[_relative_log_size(raw, raw), per_group[group_of]], groups, per_group


def _relative_log_size(d: np.ndarray, found_d: np.ndarray) -> np.ndarray:
    sized = found_d[found_d > 0]
    return np.log(np.maximum(d, 1e-9)) - (np.log(sized).mean() if sized.size else 0.0)


def truth_context(truth: np.ndarray, true_d: np.ndarray, found: np.ndarray, pred: np.ndarray,
                  pred_d: np.ndarray) -> np.ndarray:
    """What the occlusion model learns from about each true particle.

    Parameters
    ----------
    truth : numpy.ndarray
        True instance labels (particle ``k`` is label ``k + 1``).
    true_d : numpy.ndarray
        True diameters, px.
    found : numpy.ndarray
        bool, whether each true particle was found.
    pred : numpy.ndarray
        Found instance labels.
    pred_d : numpy.ndarray
        Diameters of the found instances, px.

    Returns
    -------
    numpy.ndarray
        (n_true, 3): relative log size, overlap of the found agglomerate that covers most of the
        particle, and whether it was found (0/1).
    """
    _, groups, per_group = found_context(pred, pred_d)
    t, g = truth.ravel(), groups.ravel()
    inside = (t > 0) & (g > 0)
    cover = np.zeros(len(true_d), int)  # 0: no group covers it
    if inside.any():
        pairs, n_px = np.unique(np.c_[t[inside], g[inside]], axis=0, return_counts=True)
        order = np.lexsort((n_px, pairs[:, 0]))  # by particle, then by pixels covered
        k, grp = pairs[order, 0], pairs[order, 1]
        last = np.r_[np.nonzero(np.diff(k))[0], len(k) - 1]  # each particle's best-covering group
        cover[k[last] - 1] = grp[last]
    return np.c_[_relative_log_size(true_d, pred_d), per_group[cover], found.astype(float)]


@dataclass(frozen=True)
class DetectionModel:
    """Recall of true particles by (relative size bin, agglomerate overlap bin); see the module."""

    recall: np.ndarray      # (len(SIZE_EDGES) + 1, len(OVERLAP_EDGES) + 1)
    n_particles: np.ndarray  # true particles each cell rests on
    size_edges: tuple = SIZE_EDGES
    overlap_edges: tuple = OVERLAP_EDGES

    #: no weight above this: a cell with few finds must not let one particle swamp the rest
    MAX_WEIGHT = 5.0

    @classmethod
    def fit(cls, contexts: Iterable[np.ndarray], min_per_cell: int = 20) -> DetectionModel:
        """From :func:`truth_context` rows of calibration images. A cell with fewer than
        ``min_per_cell`` true particles is refused: its recall would be noise."""
        rows = np.concatenate(list(contexts))
        shape = (len(SIZE_EDGES) + 1, len(OVERLAP_EDGES) + 1)
        cell = (np.digitize(rows[:, 0], SIZE_EDGES), np.digitize(rows[:, 1], OVERLAP_EDGES))
        n, hits = np.zeros(shape), np.zeros(shape)
        np.add.at(n, cell, 1)
        np.add.at(hits, cell, rows[:, 2])
        if n.min() < max(min_per_cell, 1):
            i, j = np.unravel_index(n.argmin(), shape)
            raise ValueError(f"detection model: cell (size bin {i}, overlap bin {j}) has {int(n.min())} "
                             f"true particles, fewer than {min_per_cell}; calibrate on more images")
        return cls(recall=hits / n, n_particles=n.astype(int))

    def weights(self, labels: np.ndarray, diameters: np.ndarray) -> np.ndarray:
        """Per instance: ``1 / recall`` of its cell, at most :attr:`MAX_WEIGHT` (1 for an instance
        without a size, which the distribution leaves out)."""
        ctx, _, _ = found_context(labels, diameters)
        cell = (np.digitize(ctx[:, 0], self.size_edges), np.digitize(ctx[:, 1], self.overlap_edges))
        w = np.minimum(1.0 / np.maximum(self.recall[cell], 1e-9), self.MAX_WEIGHT)
        return np.where(np.asarray(diameters) > 0, w, 1.0)

    def to_json(self) -> dict:
        return {"size_edges": list(self.size_edges), "overlap_edges": list(self.overlap_edges),
                "recall": np.round(self.recall, 4).tolist(), "n_particles": self.n_particles.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> DetectionModel:
        recall = np.asarray(d["recall"], float)
        size_edges, overlap_edges = tuple(d["size_edges"]), tuple(d["overlap_edges"])
        if recall.shape != (len(size_edges) + 1, len(overlap_edges) + 1):
            raise ValueError(f"detection model: recall table of shape {recall.shape} does not fit "
                             f"{len(size_edges)} size and {len(overlap_edges)} overlap bin edges")
        if not np.all((recall > 0) & (recall <= 1)):
            raise ValueError("detection model: every recall must be in (0, 1]")
        return cls(recall=recall, n_particles=np.asarray(d["n_particles"], int),
                   size_edges=size_edges, overlap_edges=overlap_edges)
