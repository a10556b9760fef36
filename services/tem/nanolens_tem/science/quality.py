"""Plausibility of a particle-size result: signals that say when not to trust it.

Every method finds "particles" in anything, random noise included. What separates a micrograph
from noise is that the pixels called particles differ from those called background by much more
than the background varies. Two signals, with thresholds measured on real TEM images and on
noise (docs/tem-evaluation.md, "Plausibility"):

- ``contrast_to_noise``: |median(particle pixels) - median(background)| over the background's
  robust standard deviation (1.4826 x MAD). Real bright-field TEM images of nanoparticles give
  1.6-25; uniform and Gaussian noise 0.3-1.0.
- ``coverage``: the fraction of the image labelled as particle. Above 0.9 there is too little
  background to tell particles from it (a streak-camera image, an image of one large object).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: below this contrast-to-noise ratio the "particles" are indistinguishable from the background
MIN_CONTRAST_TO_NOISE = 1.3
#: above this fraction of the image labelled particle there is no background to measure against
MAX_COVERAGE = 0.9
#: fewest pixels on either side for the contrast to be measured at all
MIN_PIXELS = 50


@dataclass(frozen=True)
class Quality:
    """Plausibility signals of one segmentation and the verdict they give.

    Attributes
    ----------
    contrast_to_noise : float
        Particle-versus-background contrast in units of the background's robust standard
        deviation (0 when it cannot be measured).
    coverage : float
        Fraction of the image's pixels labelled as particle, 0..1.
    warnings : tuple of str
        Why the result should not be trusted; empty when it can be.
    """

    contrast_to_noise: float
    coverage: float
    warnings: tuple[str, ...]

    @property
    def trustworthy(self) -> bool:
        return not self.warnings


def assess(image: np.ndarray, labels: np.ndarray) -> Quality:
    """Plausibility of ``labels`` (0 background, >0 particle) found in ``image``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The greyscale image that was segmented (any numeric dtype).
    labels : ndarray, shape (H, W)
        Its instance labels.

    Returns
    -------
    Quality
        The signals and the warnings they raise (thresholds ``MIN_CONTRAST_TO_NOISE``,
        ``MAX_COVERAGE``).
    """
    foreground = labels > 0
    n_fg = int(foreground.sum())
    coverage = n_fg / foreground.size
    warnings = []
    if n_fg == 0:
        return Quality(0.0, 0.0, ("no particles were found",))
    if coverage > MAX_COVERAGE:
        warnings.append(f"{coverage:.0%} of the image is labelled as particle: too little background to tell "
                        "particles from it (is this an image of particles?)")
    cnr = 0.0
    if n_fg >= MIN_PIXELS and foreground.size - n_fg >= MIN_PIXELS:
        values = np.asarray(image, dtype=np.float64)
        background = values[~foreground]
        centre = float(np.median(background))
        spread = 1.4826 * float(np.median(np.abs(background - centre)))
        difference = abs(float(np.median(values[foreground])) - centre)
        cnr = difference / spread if spread > 0 else (float("inf") if difference > 0 else 0.0)
        cnr = min(cnr, 1e6)  # a noise-free synthetic background: "very high", still a number for JSON
    if cnr < MIN_CONTRAST_TO_NOISE and coverage <= MAX_COVERAGE:
        warnings.append(f"the particles found differ from their background by {cnr:.2f} times its noise (under "
                        f"{MIN_CONTRAST_TO_NOISE}): they are indistinguishable from noise; is this a micrograph "
                        "of particles, and are they darker than the background (else bright_particles)?")
    return Quality(round(cnr, 3), round(coverage, 4), tuple(warnings))
