"""Agglomerate segmentation and the 13 morphological features of Frei & Kruis (2018).

Agglomerates are the connected components (8-connectivity) of an Otsu foreground mask after
removing small objects and filling small holes (:func:`nanolens_tem.science.baselines.foreground_mask`).

The 13 features per agglomerate (:data:`FEATURE_NAMES`; lengths in px, areas in px^2):

====  =====================  ==================================================================
  #    name                   definition
====  =====================  ==================================================================
  1    area                   number of pixels
  2    perimeter              perimeter length (skimage, 4-connected contour estimate)
  3    convex_area            pixels of the convex hull
  4    solidity               area / convex_area
  5    eccentricity           of the ellipse with the same second moments (0 = circle)
  6    major_axis             major axis length of that ellipse
  7    minor_axis             minor axis length of that ellipse
  8    equivalent_diameter    diameter of the circle with the same area
  9    extent                 area / bounding-box area
 10    feret_max              maximum Feret (caliper) diameter
 11    filled_area            area with holes filled
 12    circularity            4 pi area / perimeter^2
 13    optical_density        mean ``-ln(I / I_background)`` over the agglomerate (projected
                              thickness, grows where particles overlap)
====  =====================  ==================================================================
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label, regionprops

from nanolens_tem.science.segmentation import foreground_mask

__all__ = ["FEATURE_NAMES", "segment_agglomerates", "agglomerate_features", "background_level"]

FEATURE_NAMES = (
    "area", "perimeter", "convex_area", "solidity", "eccentricity", "major_axis", "minor_axis",
    "equivalent_diameter", "extent", "feret_max", "filled_area", "circularity", "optical_density",
)


def segment_agglomerates(image: np.ndarray, *, dark_particles: bool = True, min_size: int = 30) -> np.ndarray:
    """Agglomerates as the connected components of the Otsu mask.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    dark_particles : bool, optional
        Bright-field contrast (particles darker than the background).
    min_size : int, optional
        Objects and holes smaller than this (px^2) are removed / filled.

    Returns
    -------
    numpy.ndarray
        int32 (H, W) labels, 0 background, 8-connectivity.
    """
    m = foreground_mask(image, dark_particles=dark_particles, min_size=min_size)
    return label(m, connectivity=2).astype(np.int32)


def background_level(image: np.ndarray, agglomerates: np.ndarray) -> float:
    """Median grey level of the background.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    agglomerates : numpy.ndarray
        Its agglomerate labels (0 background).

    Returns
    -------
    float
        Median of the pixels outside all agglomerates (the image maximum when there are none).
    """
    bg = np.asarray(image, float)[agglomerates == 0]
    return float(np.median(bg)) if bg.size else float(np.max(image))


def agglomerate_features(image: np.ndarray, agglomerates: np.ndarray, *, dark_particles: bool = True) -> np.ndarray:
    """The 13 shape and grey-level features of every agglomerate.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    agglomerates : numpy.ndarray
        Consecutive labels ``1..n`` (0 background).
    dark_particles : bool, optional
        Bright-field contrast (particles darker than the background).

    Returns
    -------
    numpy.ndarray
        (n, 13) in the order of :data:`FEATURE_NAMES`, rows following the labels.
    """
    img = np.asarray(image, float)
    if not dark_particles:
        img = img.max() + img.min() - img
    i_bg = max(background_level(img, agglomerates), 1.0)
    od = -np.log(np.clip(img, 1.0, None) / i_bg)
    rows = []
    for r in regionprops(agglomerates, intensity_image=od):
        per = max(r.perimeter, 1.0)
        rows.append([
            r.area, per, r.area_convex, r.solidity, r.eccentricity, r.axis_major_length,
            r.axis_minor_length, r.equivalent_diameter_area, r.extent, r.feret_diameter_max,
            r.area_filled, 4 * np.pi * r.area / per**2, r.intensity_mean,
        ])
    return np.asarray(rows, float).reshape(-1, len(FEATURE_NAMES))
