"""Types and measures every segmentation method shares: the :class:`Segmentation` result, the
agglomerate mask (Otsu threshold after background flattening), the typical radius on a mask, label
clean-up, centroids, and the geometric statistics of a size distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import remove_small_holes, remove_small_objects

__all__ = ["ScaleChoice", "Segmentation", "foreground_mask", "flatten_background", "estimate_radius", "relabel",
           "centres", "geometric_stats"]


@dataclass(frozen=True)
class ScaleChoice:
    """The resampling factor a model ran at, and where it came from.

    ``source``: ``"request"`` (the caller named the factor) or ``"image"`` (chosen from the image:
    the particles' typical radius as the network measured it, brought to its trained size);
    ``typical_radius_px``: that radius in the image's own pixels (NaN when requested or when no
    particle was seen at any scale); ``passes``: network runs on the probe window it took.
    """

    factor: float
    source: str
    typical_radius_px: float = float("nan")
    passes: int = 0


@dataclass
class Segmentation:
    """Instance segmentation of primary particles.

    ``labels``: (H, W) int32, 0 background, ``k`` particle ``k``; ``diameters``: (K,) px, one per
    label ``1..K`` (the method's own size estimate); ``centres``: (K, 2) (row, col) px;
    ``weights``: (K,) how many particles each one stands for in the size distribution, hidden
    ones included (:mod:`nanolens_tem.science.occlusion`), or None: one each; ``scale``: the
    factor the image was resampled by before a model saw it (None: methods that run at the image's
    own scale).
    """

    labels: np.ndarray
    diameters: np.ndarray
    centres: np.ndarray
    weights: np.ndarray | None = None
    scale: ScaleChoice | None = None


def flatten_background(g: np.ndarray, mask: np.ndarray, degree: int = 2, step: int = 4) -> np.ndarray:
    """Remove uneven illumination, keeping grey levels.

    A polynomial surface is fitted to every ``step``-th pixel outside ``mask`` (grown by ``step``
    px), subtracted, and its mean added back.

    Parameters
    ----------
    g : numpy.ndarray
        (H, W) float image.
    mask : numpy.ndarray
        bool (H, W), True on particles (excluded from the fit).
    degree : int, optional
        Degree of the surface in x and y.
    step : int, optional
        Sampling stride of the fit, px.

    Returns
    -------
    numpy.ndarray
        The flattened image (``g`` itself when too little background is left to fit).
    """
    h, w = g.shape
    keep = ~ndi.binary_dilation(mask[::step, ::step])
    u, v = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
    us, vs = np.meshgrid(u[::step], v[::step])
    powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    if keep.sum() < 10 * len(powers):       # too little background to fit a surface to
        return g
    a = np.stack([us[keep] ** i * vs[keep] ** j for i, j in powers], 1)
    coef, *_ = np.linalg.lstsq(a, g[::step, ::step][keep], rcond=None)
    cm = np.zeros((degree + 1, degree + 1))
    for c, (i, j) in zip(coef, powers, strict=True):
        cm[j, i] = c
    surface = np.vander(v, degree + 1, increasing=True) @ cm @ np.vander(u, degree + 1, increasing=True).T
    return g - surface + surface.mean()


def foreground_mask(image: np.ndarray, *, dark_particles: bool = True, smooth_sigma: float = 1.0,
                    min_size: int = 30, flatten: bool = True) -> np.ndarray:
    """Particle/agglomerate mask by Otsu's threshold on a Gaussian-smoothed image.

    Parameters
    ----------
    image : (H, W) array
        Grey-level TEM image.
    dark_particles : bool
        Bright-field contrast (particles darker than the background).
    smooth_sigma : float
        Gaussian pre-smoothing in px.
    min_size : int
        Objects and holes smaller than this (px^2) are removed / filled.
    flatten : bool
        Remove uneven illumination first: a quadratic surface is fitted to the background of a
        first Otsu mask and subtracted, twice (a global threshold otherwise marks the dark side
        of an unevenly lit background as particles). Skipped when under 5 % of the image is
        background.

    Returns
    -------
    numpy.ndarray
        bool (H, W), True on particles.
    """
    # bright particles: negate, so that an inverted micrograph gives exactly the dark-mode mask
    # (Otsu on the mirrored histogram would split one grey level off)
    g = np.asarray(image, float) if dark_particles else -np.asarray(image, float)
    f = ndi.gaussian_filter(g, smooth_sigma) if smooth_sigma > 0 else g
    m = f < threshold_otsu(f)
    for _ in range(2 if flatten else 0):
        if (~m).mean() < 0.05:
            break
        flat = flatten_background(f, m)
        m = flat < threshold_otsu(flat)
    m = remove_small_objects(m, max_size=min_size)
    return remove_small_holes(m, max_size=min_size)


def estimate_radius(mask: np.ndarray) -> float:
    """Typical particle radius of a mask.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (H, W) particle mask.

    Returns
    -------
    float
        Median of the distance transform at its local maxima, px.
    """
    if not mask.any():
        return 0.0
    edt = ndi.distance_transform_edt(mask)
    pk = peak_local_max(edt, min_distance=2, threshold_abs=1.0, labels=label(mask))
    if len(pk) == 0:
        return float(edt.max())
    return float(np.median(edt[tuple(pk.T)]))


def relabel(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Drop small labels and number the rest consecutively.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 background.
    min_area : float
        Labels with fewer pixels are removed.

    Returns
    -------
    numpy.ndarray
        Labels ``1..K`` in the original order.
    """
    area = np.bincount(labels.ravel())
    keep = area >= min_area
    keep[0] = False
    lut = np.zeros(len(area), np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[labels]


def centres(labels: np.ndarray) -> np.ndarray:
    """Centroid of each label, by three bincounts.

    0.07 s instead of ``scipy.ndimage.center_of_mass``'s 0.22 s on a 2048 px image.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 background.

    Returns
    -------
    numpy.ndarray
        (max label, 2) (row, col) centroids; NaN for a label with no pixels.
    """
    n = int(labels.max())
    if n == 0:
        return np.zeros((0, 2))
    h, w = labels.shape
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n + 1)[1:]
    rows = np.bincount(flat, weights=np.repeat(np.arange(h, dtype=float), w), minlength=n + 1)[1:]
    cols = np.bincount(flat, weights=np.tile(np.arange(w, dtype=float), h), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([rows / count, cols / count], 1)


def geometric_stats(d: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Geometric mean diameter and geometric standard deviation.

    Parameters
    ----------
    d : numpy.ndarray
        Diameters (> 0).
    weights : numpy.ndarray, optional
        How many particles each diameter stands for (frequency weights, e.g. the occlusion
        correction of :mod:`nanolens_tem.science.occlusion`); all 1 when left out.

    Returns
    -------
    gmd : float
        Geometric mean diameter (NaN for no values).
    gsd : float
        Geometric standard deviation (1 for fewer than two values, NaN for none).
    """
    d = np.asarray(d, dtype=float)
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != d.shape:
        raise ValueError(f"weights: expected one per diameter, shape {d.shape}, got shape {w.shape}")
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError("weights: every weight must be positive and finite")
    keep = d > 0
    d, w = d[keep], w[keep]
    if d.size == 0:
        return float("nan"), float("nan")
    logd = np.log(d)
    mean = float(np.average(logd, weights=w))
    total = float(w.sum())
    if d.size < 2 or total <= 1:
        return float(np.exp(mean)), 1.0
    # the ddof=1 variance of the particles the weights stand for
    return float(np.exp(mean)), float(np.exp(np.sqrt(np.sum(w * (logd - mean) ** 2) / (total - 1))))


def bootstrap_ci(d: np.ndarray, weights: np.ndarray | None = None, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Confidence intervals of the GMD and the GSD by a bootstrap over the particles.

    Parameters
    ----------
    d : numpy.ndarray
        Diameters (> 0 kept).
    weights : numpy.ndarray, optional
        Frequency weights (see :func:`geometric_stats`), resampled with their particles.
    resamples : int
        Bootstrap resamples.
    level : float
        Coverage of the percentile interval.
    seed : int
        Seed of the resampling: the same particles give the same interval.

    Returns
    -------
    gmd_ci, gsd_ci : tuple of float
        (low, high) of each; NaN with fewer than two particles.
    """
    d = np.asarray(d, dtype=float)
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=float)
    keep = d > 0
    logd, w = np.log(d[keep]), w[keep]
    n = logd.size
    if n < 2:
        return (float("nan"),) * 2, (float("nan"),) * 2
    rng = np.random.default_rng(seed)
    gmd, gsd = np.empty(resamples), np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # resamples per pass: a bounded index array
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, (min(chunk, resamples - start), n))
        x, ww = logd[idx], w[idx]
        total = ww.sum(1)
        mean = (ww * x).sum(1) / total
        var = (ww * (x - mean[:, None]) ** 2).sum(1) / np.maximum(total - 1, 1e-12)
        gmd[start:start + len(idx)] = np.exp(mean)
        gsd[start:start + len(idx)] = np.exp(np.sqrt(np.where(total > 1, var, 0.0)))
    q = [50 * (1 - level), 50 * (1 + level)]
    (g0, g1), (s0, s1) = np.percentile(gmd, q), np.percentile(gsd, q)
    return (float(g0), float(g1)), (float(s0), float(s1))
