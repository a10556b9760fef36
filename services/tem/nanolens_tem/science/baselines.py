"""Classical baselines: watershed and Hough-transform primary-particle segmentation.

Both start from the same agglomerate mask (Otsu threshold, dark particles on a bright
background) and both are scale-free: their length parameters are multiples of a typical particle
radius ``r_est`` measured on the mask itself (the median height of the distance transform's
local maxima), so the same tuned parameters work at any magnification.

The parameters in :data:`WATERSHED_DEFAULTS` and :data:`HOUGH_DEFAULTS` were tuned by grid search
on a tuning split of synthetic images (seeds disjoint from the test split) with
``python -m nanolens_tem.evaluation.tune_baselines``, minimising ``|GMD err| + |GSD err| + (1 - F1)``
(grid on 40 images, the five best confirmed on 120).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import canny, peak_local_max
from skimage.measure import label
from skimage.segmentation import watershed
from skimage.transform import hough_circle, hough_circle_peaks

from nanolens_tem.science.segmentation import Segmentation, centres, estimate_radius, foreground_mask, relabel

__all__ = [
    "watershed_segment",
    "hough_segment",
    "WATERSHED_DEFAULTS",
    "HOUGH_DEFAULTS",
]


#: tuned on the synthetic tuning split (see the module docstring)
WATERSHED_DEFAULTS = {"min_distance": 0.4, "threshold": 0.3, "smooth": 0.0, "min_area": 0.1}
HOUGH_DEFAULTS = {"sigma": 1.25, "r_lo": 0.9, "r_hi": 4.0, "threshold": 0.35, "min_distance": 0.9}


def watershed_segment(image: np.ndarray, *, mask: np.ndarray | None = None, min_distance: float | None = None,
                      threshold: float | None = None, smooth: float | None = None,
                      min_area: float | None = None, dark_particles: bool = True) -> Segmentation:
    """Particle instances by a distance-transform watershed seeded at distance maxima.

    Length parameters are fractions of the estimated particle radius ``r``; ``None`` takes the
    tuned default.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    mask : numpy.ndarray, optional
        Boolean particle mask; computed by :func:`foreground_mask` when not given.
    min_distance : float, optional
        Markers are local maxima at least ``min_distance * r`` apart.
    threshold : float, optional
        ... and higher than ``threshold * r``.
    smooth : float, optional
        The distance map is smoothed with a Gaussian of ``smooth * r``.
    min_area : float, optional
        Instances smaller than ``min_area * pi r^2`` are dropped.
    dark_particles : bool, optional
        Bright-field contrast (particles darker than the background).

    Returns
    -------
    Segmentation
        Labels, equivalent-circle diameters (px) and centres of the instances.
    """
    p = {**WATERSHED_DEFAULTS, **{k: v for k, v in dict(min_distance=min_distance, threshold=threshold,
                                                         smooth=smooth, min_area=min_area).items()
                                  if v is not None}}
    m = foreground_mask(image, dark_particles=dark_particles) if mask is None else mask
    r = estimate_radius(m)
    if r <= 0:
        z = np.zeros(m.shape, np.int32)
        return Segmentation(z, np.zeros(0), np.zeros((0, 2)))
    edt = ndi.distance_transform_edt(m)
    if p["smooth"] > 0:
        edt = ndi.gaussian_filter(edt, p["smooth"] * r)
    comp = label(m)
    pk = peak_local_max(edt, min_distance=max(1, int(round(p["min_distance"] * r))),
                        threshold_abs=p["threshold"] * r, labels=comp, exclude_border=False)
    markers = np.zeros(m.shape, np.int32)
    markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    # components without a marker keep one instance
    missing = np.setdiff1d(np.unique(comp[m]), np.unique(comp[markers > 0]))
    for c in missing:
        idx = np.argmax(np.where(comp == c, edt, -1))
        markers.flat[idx] = markers.max() + 1
    lab = watershed(-edt, markers, mask=m)
    lab = relabel(lab, p["min_area"] * np.pi * r**2)
    area = np.bincount(lab.ravel())[1:]
    return Segmentation(lab, 2.0 * np.sqrt(area / np.pi), centres(lab))


def hough_segment(image: np.ndarray, *, mask: np.ndarray | None = None, sigma: float | None = None,
                  r_lo: float | None = None, r_hi: float | None = None, threshold: float | None = None,
                  min_distance: float | None = None, dark_particles: bool = True) -> Segmentation:
    """Particle instances by a circle Hough transform on Canny edges.

    Circles whose accumulator value is at least ``threshold`` (a fraction of the largest possible)
    and whose centres are ``min_distance * r`` apart and inside the mask are kept. Every mask pixel
    goes to the circle that covers it most deeply (smallest ``distance / radius``); pixels outside
    all circles stay background. ``None`` takes the tuned default.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    mask : numpy.ndarray, optional
        Boolean particle mask; computed by :func:`foreground_mask` when not given.
    sigma : float, optional
        Canny smoothing in px.
    r_lo, r_hi : float, optional
        Searched radii, as fractions of the estimated radius ``r``.
    threshold : float, optional
        Accumulator threshold, fraction of the maximum.
    min_distance : float, optional
        Least centre distance, fraction of ``r``.
    dark_particles : bool, optional
        Bright-field contrast (particles darker than the background).

    Returns
    -------
    Segmentation
        Labels, circle diameters (px) and centres of the instances.
    """
    p = {**HOUGH_DEFAULTS, **{k: v for k, v in dict(sigma=sigma, r_lo=r_lo, r_hi=r_hi, threshold=threshold,
                                                     min_distance=min_distance).items() if v is not None}}
    img = np.asarray(image, float)
    m = foreground_mask(img, dark_particles=dark_particles) if mask is None else mask
    r = estimate_radius(m)
    h, w = m.shape
    if r <= 0:
        return Segmentation(np.zeros((h, w), np.int32), np.zeros(0), np.zeros((0, 2)))
    edges = canny(img, sigma=p["sigma"]) & ndi.binary_dilation(m, iterations=3)
    lo, hi = max(2, int(np.floor(p["r_lo"] * r))), max(3, int(np.ceil(p["r_hi"] * r)))
    step = max(1, (hi - lo) // 40)
    radii = np.arange(lo, hi + 1, step)
    acc = hough_circle(edges, radii, normalize=True)
    md = max(1, int(round(p["min_distance"] * r)))
    _, cx, cy, rad = hough_circle_peaks(acc, radii, min_xdistance=md, min_ydistance=md,
                                        threshold=p["threshold"], total_num_peaks=10_000)
    cx, cy = cx.astype(int), cy.astype(int)
    inside = m[cy, cx]
    cx, cy, rad = cx[inside], cy[inside], rad[inside].astype(float)
    lab = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf)
    for k, (y, x, rr) in enumerate(zip(cy, cx, rad, strict=True)):
        y0, y1, x0, x1 = max(0, int(y - rr)), min(h, int(y + rr) + 1), max(0, int(x - rr)), min(w, int(x + rr) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        q = np.hypot(yy - y, xx - x) / rr
        win = (q <= 1.0) & (q < best[y0:y1, x0:x1]) & m[y0:y1, x0:x1]
        best[y0:y1, x0:x1][win] = q[win]
        lab[y0:y1, x0:x1][win] = k + 1
    present = np.bincount(lab.ravel(), minlength=len(rad) + 1)[1:] > 0
    lut = np.zeros(len(rad) + 1, np.int32)
    lut[1:][present] = np.arange(1, present.sum() + 1)
    lab = lut[lab]
    return Segmentation(lab, 2.0 * rad[present], np.stack([cy[present], cx[present]], 1).astype(float))
