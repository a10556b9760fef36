"""Whether to trust a movie's analysis: a segmentation finds "particles" in any frame, noise
included, and a linker links some of them by chance. Two signals tell a movie of particles from
that; each threshold lies halfway between the values of movies of particles and of movies that
are none (noise, invisible particles, frames of unrelated movies) in
``python -m nanolens_lpem.evaluation.verdict`` (docs/lpem-evaluation.md, "Verdict"):

- ``linked_fraction``: the share of all detections that belong to tracks of at least three
  frames. Real particles persist from frame to frame; detections in noise mostly do not.
- ``contrast_to_noise``: the median over frames of how far the detected pixels stand out from
  the background's noise (:func:`nanolens_micrographs.contrast_to_noise`).
"""

from __future__ import annotations

import numpy as np

from nanolens_micrographs import contrast_to_noise

#: below this share of detections in tracks of >= 3 frames, the detections do not persist
MIN_LINKED_FRACTION = 0.7
#: below this median contrast-to-noise, the detections do not stand out from the noise
MIN_CONTRAST_TO_NOISE = 0.6


def frame_contrast(frame: np.ndarray, labels: np.ndarray) -> float:
    """Contrast-to-noise of one frame's detections.

    Parameters
    ----------
    frame : numpy.ndarray
        H x W frame.
    labels : numpy.ndarray
        H x W instance labels of its detections (0 background).

    Returns
    -------
    float
        :func:`nanolens_micrographs.contrast_to_noise` of the detections (0 when too few pixels
        to measure).
    """
    return contrast_to_noise(frame, labels > 0)[0]


def judge(linked_fraction: float, contrast: float) -> tuple[str, ...]:
    """The warnings a movie's signals raise.

    Parameters
    ----------
    linked_fraction : float
        Share of all detections in tracks of at least 3 frames.
    contrast : float
        Median over frames of :func:`frame_contrast`.

    Returns
    -------
    tuple of str
        One sentence per signal under its threshold; empty when the analysis can be trusted.
    """
    out = []
    if linked_fraction < MIN_LINKED_FRACTION:
        out.append(f"only {linked_fraction:.0%} of the detections persist for 3 frames or more (under "
                   f"{MIN_LINKED_FRACTION:.0%}): most are noise, or the particles move further between frames "
                   "than search_range_px")
    if contrast < MIN_CONTRAST_TO_NOISE:
        out.append(f"the detections differ from the background by {contrast:.2f} times its noise (under "
                   f"{MIN_CONTRAST_TO_NOISE}): they are indistinguishable from noise; is this a movie of particles, "
                   "and is their contrast right (bright_particles)?")
    return tuple(out)
