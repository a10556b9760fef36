"""Motion, etching and assembly from a tracks table: drift, diffusion, pairs, clusters.

A tracks table is a dict of equal-length numpy columns with at least ``frame``, ``track``,
``row``, ``col`` (px) and ``diameter`` (px). Diffusion coefficients are in px^2/frame; the
caller converts with the pixel size and the frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

Table = dict[str, np.ndarray]


def drift(table: Table, n_frames: int, min_common: int = 3) -> np.ndarray:
    """Cumulative drift of the field (px) per frame: the median step of the tracks present in a
    frame and the one before it (robust to a few particles moving together).

    Parameters
    ----------
    table : dict of numpy.ndarray
        Tracks table (``frame``, ``track``, ``row``, ``col``).
    n_frames : int
        Frames in the movie.
    min_common : int
        Fewest tracks shared by two frames for a drift step to be estimated (else 0).

    Returns
    -------
    numpy.ndarray
        (n_frames, 2) drift (row, col) relative to frame 0, px.
    """
    steps = np.zeros((n_frames, 2))
    if len(table["frame"]) == 0:
        return steps
    order = np.lexsort((table["frame"], table["track"]))
    f, t = table["frame"][order], table["track"][order]
    pos = np.column_stack([table["row"][order], table["col"][order]])
    nxt = (t[1:] == t[:-1]) & (f[1:] == f[:-1] + 1)
    d, at = pos[1:][nxt] - pos[:-1][nxt], f[1:][nxt].astype(int)
    if at.size:
        order = np.argsort(at, kind="stable")
        at, d = at[order], d[order]
        bounds = np.searchsorted(at, np.arange(n_frames + 1))
        for k in range(1, n_frames):
            lo, hi = bounds[k], bounds[k + 1]
            if hi - lo >= min_common:
                steps[k] = np.median(d[lo:hi], axis=0)
    return np.cumsum(steps, axis=0)


def _track_slices(table: Table):
    order = np.lexsort((table["frame"], table["track"]))
    t = table["track"][order]
    cuts = np.flatnonzero(np.diff(t)) + 1
    return order, np.split(np.arange(len(t)), cuts)


def cve_terms(frames: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step terms of the covariance-based estimator of diffusion for one track.

    The estimator of Vestergaard et al. (PRE 2014): ``D = mean(sq) / 2 + mean(cov)`` is unbiased
    by localisation noise. Steps across a gap in the track are left out.

    Parameters
    ----------
    frames : numpy.ndarray
        (n,) frame numbers of the track, increasing.
    pos : numpy.ndarray
        (n, 2) positions, px.

    Returns
    -------
    sq : numpy.ndarray
        For each pair of consecutive one-frame steps, the squared first step averaged over both
        axes, px^2.
    cov : numpy.ndarray
        The product of the step with the next, averaged over both axes, px^2.
    """
    step_ok = np.diff(frames) == 1
    steps = np.diff(pos, axis=0)
    pair_ok = step_ok[:-1] & step_ok[1:]
    if not pair_ok.any():
        return np.zeros(0), np.zeros(0)
    a, b = steps[:-1][pair_ok], steps[1:][pair_ok]
    return (a**2).mean(axis=1), (a * b).mean(axis=1)


def cve(sq: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """Diffusion coefficient and its standard error from the terms of :func:`cve_terms`.

    The error is Vestergaard's variance for a 2D track with instantaneous exposure:
    ``var D = D^2 [(6 + 4e + 2e^2)/N + 4(1 + e)^2/N^2] / 2`` with ``e = sigma^2 / D``.

    Parameters
    ----------
    sq, cov : numpy.ndarray
        Per-step terms of one track or of many tracks pooled.

    Returns
    -------
    d : float
        Diffusion coefficient, px^2/frame (NaN without terms).
    se : float
        Its standard error (NaN without terms or when ``d`` <= 0).
    """
    n = sq.size
    if n == 0:
        return float("nan"), float("nan")
    d = float(sq.mean() / 2 + cov.mean())
    sigma2 = max(-float(cov.mean()), 0.0)
    if d <= 0:
        return d, float("nan")
    e = sigma2 / d
    var = d**2 * ((6 + 4 * e + 2 * e**2) / n + 4 * (1 + e) ** 2 / n**2) / 2
    return d, float(np.sqrt(var))


@dataclass
class Diffusion:
    """Per-track and ensemble diffusion (px^2/frame) and the ensemble MSD curve."""

    tracks: Table  # track, first_frame, n_frames, d, d_low, d_high, n_steps, mean_diameter, diameter_rate
    d: float  # ensemble (all steps of all tracks pooled)
    d_low: float  # 95 % bootstrap interval over tracks
    d_high: float
    sigma2: float  # localisation variance per axis, px^2
    n_tracks: int
    n_steps: int
    lags: np.ndarray  # frames
    msd: np.ndarray  # px^2, 2D, pooled over tracks
    msd_count: np.ndarray
    msd_d: float  # slope of MSD = 4 D lag + 4 sigma^2 over lags 1..4
    msd_offset: float


def diffusion(table: Table, drift_px: np.ndarray | None = None, max_lag: int = 20, min_steps: int = 3,
              n_boot: int = 200, seed: int = 0) -> Diffusion:
    """Diffusion coefficients with 95 % intervals, per track and for the ensemble, and the MSD.

    Parameters
    ----------
    table : dict of numpy.ndarray
        Tracks table (``frame``, ``track``, ``row``, ``col``, ``diameter``).
    drift_px : numpy.ndarray, optional
        (n_frames, 2) drift from :func:`drift`, subtracted from the positions.
    max_lag : int
        Longest lag (frames) of the MSD curve.
    min_steps : int
        Tracks with fewer usable step pairs get no per-track D (NaN) but still count in the MSD.
    n_boot : int
        Bootstrap resamples (over tracks) of the ensemble interval.
    seed : int
        Bootstrap seed.

    Returns
    -------
    Diffusion
    """
    pos_all = np.column_stack([table["row"], table["col"]]).astype(np.float64)
    frames_all = table["frame"].astype(np.int64)
    if drift_px is not None and len(frames_all):
        pos_all = pos_all - drift_px[frames_all]
    order, groups = _track_slices(table) if len(frames_all) else (np.zeros(0, int), [])
    lags = np.arange(1, max_lag + 1)
    msd_sum, msd_n = np.zeros(max_lag), np.zeros(max_lag, np.int64)
    rows, sqs, covs = [], [], []
    for g in groups:
        idx = order[g]
        f, p = frames_all[idx], pos_all[idx]
        sq, cov = cve_terms(f, p)
        sqs.append(sq)
        covs.append(cov)
        d, se = cve(sq, cov) if sq.size >= min_steps else (float("nan"), float("nan"))
        diam = table["diameter"][idx]
        rate = float(np.polyfit(f, diam, 1)[0]) if len(np.unique(f)) >= 3 else float("nan")
        rows.append((table["track"][idx[0]], f[0], f[-1] - f[0] + 1, d, d - 1.96 * se, d + 1.96 * se, sq.size,
                     float(diam.mean()), rate))
        full = np.full((f[-1] - f[0] + 1, 2), np.nan)
        full[f - f[0]] = p
        for k, lag in enumerate(lags[:len(full) - 1]):
            disp = full[lag:] - full[:-lag]
            s = (disp**2).sum(axis=1)
            s = s[np.isfinite(s)]
            msd_sum[k] += s.sum()
            msd_n[k] += s.size
    names = ("track", "first_frame", "n_frames", "d", "d_low", "d_high", "n_steps", "mean_diameter", "diameter_rate")
    arr = np.array(rows, dtype=np.float64).reshape(-1, len(names))
    tracks = {n: arr[:, i] for i, n in enumerate(names)}
    for n in ("track", "first_frame", "n_frames", "n_steps"):
        tracks[n] = tracks[n].astype(np.int64)
    sq_all = np.concatenate(sqs) if sqs else np.zeros(0)
    cov_all = np.concatenate(covs) if covs else np.zeros(0)
    d_ens = float(sq_all.mean() / 2 + cov_all.mean()) if sq_all.size else float("nan")
    lo = hi = float("nan")
    sizes = np.array([s.size for s in sqs])
    if sq_all.size and (sizes > 0).sum() >= 2:
        rng = np.random.default_rng(seed)
        sums = np.array([[s.sum() / 2 + c.sum()] for s, c in zip(sqs, covs, strict=True)])[:, 0]
        boot = []
        for _ in range(n_boot):
            pick = rng.integers(0, len(sqs), len(sqs))
            n = sizes[pick].sum()
            if n:
                boot.append(sums[pick].sum() / n)
        lo, hi = (float(v) for v in np.percentile(boot, (2.5, 97.5)))
    msd = np.where(msd_n > 0, msd_sum / np.maximum(msd_n, 1), np.nan)
    fit = np.isfinite(msd[:4])
    if fit.sum() >= 2:
        slope, offset = np.polyfit(lags[:4][fit], msd[:4][fit], 1)
        msd_d, msd_offset = float(slope / 4), float(offset)
    else:
        msd_d = msd_offset = float("nan")
    return Diffusion(tracks, d_ens, lo, hi, max(-float(cov_all.mean()), 0.0) if cov_all.size else float("nan"),
                     len(groups), int(sq_all.size), lags, msd, msd_n, msd_d, msd_offset)


def pairs(table: Table, cutoff: float, drift_px: np.ndarray | None = None) -> Table:
    """Every pair of particles closer than ``cutoff`` px in a frame, with its separation and
    the change of separation since the frame before (NaN when the pair was not listed there).

    Parameters
    ----------
    table : dict of numpy.ndarray
        Tracks table.
    cutoff : float
        Largest centre distance, px.
    drift_px : numpy.ndarray, optional
        Ignored for separations (drift moves both particles alike); kept for symmetry.

    Returns
    -------
    dict of numpy.ndarray
        ``frame``, ``track_a`` < ``track_b``, ``separation`` (px), ``d_separation`` (px/frame).
    """
    frame, track = table["frame"].astype(np.int64), table["track"].astype(np.int64)
    pos = np.column_stack([table["row"], table["col"]])
    out_f, out_a, out_b, out_s = [], [], [], []
    order = np.argsort(frame, kind="stable")
    cuts = np.flatnonzero(np.diff(frame[order])) + 1
    for g in np.split(order, cuts) if len(order) else []:
        if g.size < 2:
            continue
        found = cKDTree(pos[g]).query_pairs(cutoff, output_type="ndarray")
        if not found.size:
            continue
        a, b = track[g][found[:, 0]], track[g][found[:, 1]]
        out_f.append(np.full(len(found), frame[g[0]]))
        out_a.append(np.minimum(a, b))
        out_b.append(np.maximum(a, b))
        out_s.append(np.hypot(*(pos[g][found[:, 0]] - pos[g][found[:, 1]]).T))
    if not out_f:
        return {k: np.zeros(0, dt) for k, dt in (("frame", np.int64), ("track_a", np.int64), ("track_b", np.int64),
                                                   ("separation", np.float64), ("d_separation", np.float64))}
    f, a, b, s = (np.concatenate(x) for x in (out_f, out_a, out_b, out_s))
    order = np.lexsort((f, b, a))
    f, a, b, s = f[order], a[order], b[order], s[order]
    ds = np.full(len(f), np.nan)
    same = (a[1:] == a[:-1]) & (b[1:] == b[:-1]) & (f[1:] == f[:-1] + 1)
    ds[1:][same] = s[1:][same] - s[:-1][same]
    back = np.lexsort((b, a, f))
    return {"frame": f[back], "track_a": a[back], "track_b": b[back], "separation": s[back], "d_separation": ds[back]}


def clusters(table: Table, n_frames: int, contact: float = 1.15, gap_px: float = 1.5) -> Table:
    """Assembly per frame: particles touch when their centres are closer than
    ``contact * (d_a + d_b) / 2 + gap_px``; clusters are the connected groups.

    Parameters
    ----------
    table : dict of numpy.ndarray
        Tracks table (``frame``, ``row``, ``col``, ``diameter``).
    n_frames : int
        Frames in the movie.
    contact : float
        Factor on the sum of the equivalent radii.
    gap_px : float
        Added distance, px.

    Returns
    -------
    dict of numpy.ndarray
        Per frame: ``frame``, ``n_particles``, ``n_clusters`` (single particles included),
        ``mean_cluster_size`` (particles per cluster, weighted by particle), ``max_cluster_size``,
        ``coordination`` (mean number of touching neighbours), ``mean_diameter`` (px).
    """
    out = {k: np.zeros(n_frames) for k in ("n_particles", "n_clusters", "mean_cluster_size", "max_cluster_size",
                                            "coordination", "mean_diameter")}
    frame = table["frame"].astype(np.int64)
    pos = np.column_stack([table["row"], table["col"]])
    diam = table["diameter"]
    order = np.argsort(frame, kind="stable")
    cuts = np.flatnonzero(np.diff(frame[order])) + 1
    for g in np.split(order, cuts) if len(order) else []:
        t = frame[g[0]]
        n = g.size
        reach = contact * float(diam[g].max()) + gap_px
        found = cKDTree(pos[g]).query_pairs(reach, output_type="ndarray") if n > 1 else np.zeros((0, 2), int)
        if found.size:
            dist = np.hypot(*(pos[g][found[:, 0]] - pos[g][found[:, 1]]).T)
            touch = found[dist < contact * (diam[g][found[:, 0]] + diam[g][found[:, 1]]) / 2 + gap_px]
        else:
            touch = found
        graph = coo_matrix((np.ones(len(touch)), (touch[:, 0], touch[:, 1])), shape=(n, n))
        nc, comp = connected_components(graph, directed=False)
        sizes = np.bincount(comp)
        out["n_particles"][t] = n
        out["n_clusters"][t] = nc
        out["mean_cluster_size"][t] = float((sizes**2).sum() / n)
        out["max_cluster_size"][t] = float(sizes.max())
        out["coordination"][t] = 2.0 * len(touch) / n
        out["mean_diameter"][t] = float(diam[g].mean())
    out["frame"] = np.arange(n_frames)
    return out
