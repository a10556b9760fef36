"""Whether to trust a particle-size result: signals measured on it, and the verdict they give.

Every method finds "particles" in anything, random noise included, and a CNN trained on one
kind of micrograph returns confident numbers on another. Each signal below catches one way a
result goes wrong; the verdict flags a result when any signal lies beyond its threshold. The
thresholds (:data:`THRESHOLDS`) were fitted on results with ground truth (real masks, synthetic
images over scale, noise, blur and texture, blanks and noise) and checked on sets kept out of the
fit: ``python -m nanolens_tem.evaluation.verdict`` (docs/tem-evaluation.md, "Verdict").

- ``contrast_to_noise``: |median(particle pixels) - median(background)| over the background's
  robust standard deviation (1.4826 x MAD): noise gives about 1 or less.
- ``coverage``: fraction of the image labelled particle; near 1 there is no background to tell
  particles from.
- ``count``: particles found; a GMD of a handful of particles is not a distribution's.
- ``gmd_px``: the GMD in pixels, against the range the model sizes well.
- ``edge_fraction``: share of particles touching the edge of the analysed area (the image border
  or the information bar): cut particles are sized too small, and bar text is not particles.
- ``faint_fraction``: share of particles that differ from the ring of pixels around them by less
  than the background's noise: texture or noise segmented as particles.
- ``outline_ratio``: the GMD over that of the equivalent-circle diameters of the particles'
  labelled areas: sizes the outlines found do not support (a radius head sizing whole crystals
  from fragments, or merged neighbours).
- ``classical_ratio``, ``classical_count_ratio``: the result's GMD and count over those of a
  classical watershed on the same image; a large disagreement means at least one is wrong.
- ``half_scale_ratio``: the GMD of the same image at half scale (x 2) over the result's: a size
  that changes with magnification is not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from nanolens_micrographs import contrast_to_noise
from nanolens_tem.science.baselines import watershed_segment
from nanolens_tem.science.cnn import resample
from nanolens_tem.science.segmentation import Segmentation, geometric_stats

#: a particle is faint when its mean differs from its surrounding ring by less than this many
#: background standard deviations
FAINT = 1.0
#: width of the ring around each particle, px
RING = 3

#: signal -> (kind, threshold): "min" flags values below, "max" above, "band" flags ratios beyond
#: the factor either way. Fitted on 242 results of the shipped CNN with ground truth, every set
#: weighing the same, at most 4 % of the right results flagged (nanolens_tem.evaluation.verdict).
THRESHOLDS: dict[str, tuple[str, float]] = {
    "half_scale_ratio": ("band", 1.82),
    "classical_count_ratio": ("band", 4.84),
    "coverage": ("max", 0.785),
    "edge_fraction": ("max", 0.878),
    "faint_fraction": ("max", 0.321),
    "gmd_px": ("min", 14.5),
}

REASONS = {
    "contrast_to_noise": "the particles found differ from their background by {value:.2f} times its noise (under "
                         "{threshold:g}): they are indistinguishable from noise; is this a micrograph of particles, "
                         "and are they darker than the background (else bright_particles)?",
    "coverage": "{value:.0%} of the image is labelled as particle (over {threshold:.0%}): too little background to "
                "tell particles from it (is this an image of particles?)",
    "count": "only {value:.0f} particles were found (under {threshold:g}): too few for a size distribution",
    "gmd_px": "the particles are {value:.1f} px across, outside the sizes the method measures well ({bound} "
              "{threshold:g} px): image them at another magnification",
    "edge_fraction": "{value:.0%} of the particles touch the image's edge or the information bar (over "
                     "{threshold:.0%}): cut particles are sized too small, and bar text is no particle",
    "faint_fraction": "{value:.0%} of the particles differ from their surroundings by less than the background's "
                      "noise (over {threshold:.0%}): texture or noise is being counted as particles",
    "classical_ratio": "the GMD is {value:.2f} times that of a classical watershed on the same image (beyond a "
                       "factor {threshold:.2f} either way): the two methods disagree, so at least one is wrong",
    "outline_ratio": "the sizes are {value:.2f} times those of the outlines found (beyond a factor {threshold:.2f} "
                     "either way): the particles' sizes are not supported by what was segmented",
    "classical_count_ratio": "{value:.2f} times as many particles as a classical watershed finds on the same image "
                             "(beyond a factor {threshold:.2f} either way): particles split or merged",
    "half_scale_ratio": "the same image at half the magnification gives a GMD {value:.2f} times this one (beyond a "
                        "factor {threshold:.2f} either way): the size depends on the magnification, so it is not "
                        "a measurement",
}


@dataclass(frozen=True)
class Signals:
    """What a result is judged by (see the module docstring); NaN: not measured."""

    contrast_to_noise: float
    coverage: float
    count: int
    gmd_px: float
    edge_fraction: float
    faint_fraction: float
    outline_ratio: float
    classical_ratio: float = math.nan
    classical_count_ratio: float = math.nan
    half_scale_ratio: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Quality:
    """The signals of one result and the verdict they give.

    Attributes
    ----------
    signals : Signals
    warnings : tuple of str
        Why the result should not be trusted, one sentence per signal beyond its threshold;
        empty when it can be trusted.
    """

    signals: Signals
    warnings: tuple[str, ...]

    @property
    def trustworthy(self) -> bool:
        return not self.warnings


def _faint_fraction(values: np.ndarray, labels: np.ndarray, spread: float) -> float:
    """Share of particles whose mean differs from the mean of a ring around them by under FAINT x spread."""
    n = int(labels.max())
    ids = np.arange(1, n + 1)
    grown = ndi.grey_dilation(labels, size=(2 * RING + 1, 2 * RING + 1))
    ring = np.where(labels == 0, grown, 0)
    present = np.bincount(labels.ravel(), minlength=n + 1)[1:] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = ndi.mean(values, labels, ids)
        around = ndi.mean(values, ring, ids)
        faint = np.abs(inside - around) < FAINT * spread
    # a particle with no ring (enclosed by others) is not faint: it is judged by its agglomerate
    faint &= np.isfinite(around)
    return float(faint[present].mean()) if present.any() else 0.0


def _edge_fraction(labels: np.ndarray) -> float:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touching = np.unique(edge[edge > 0]).size
    total = np.unique(labels[labels > 0]).size
    return touching / total if total else 0.0


def measure(image: np.ndarray, labels: np.ndarray, diameters: np.ndarray, weights: np.ndarray | None = None, *,
            classical_gmd: float = math.nan, classical_count: int = 0, half_scale_gmd: float = math.nan) -> Signals:
    """The signals of a result.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The greyscale image that was analysed (any numeric dtype).
    labels : ndarray, shape (H, W)
        Its instance labels (0 background).
    diameters, weights : ndarray, shape (K,)
        The particles' diameters (px) and the number each stands for (None: 1).
    classical_gmd, classical_count, half_scale_gmd : float
        The GMD (px, in this image's pixels) and count of a classical method on the same image, and
        the GMD of the same method on the image at half scale; NaN (count: 0) when not run.

    Returns
    -------
    Signals
        Every signal of the module docstring (NaN where not measured).
    """
    values = np.asarray(image, dtype=np.float64)
    foreground = labels > 0
    coverage = float(foreground.mean())
    cnr, spread = contrast_to_noise(values, foreground)
    d = np.asarray(diameters, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[d > 0]
    gmd = geometric_stats(d[d > 0], w)[0] if (d > 0).any() else math.nan
    faint = _faint_fraction(values, labels, spread) if foreground.any() and spread > 0 else 0.0
    area = np.bincount(labels.ravel())[1:]
    outline = geometric_stats(2 * np.sqrt(area[area > 0] / np.pi))[0] if (area > 0).any() else math.nan
    count = int((d > 0).sum())
    known = gmd > 0  # NaN compares false
    return Signals(contrast_to_noise=round(cnr, 3), coverage=round(coverage, 4), count=count,
                   gmd_px=gmd, edge_fraction=_edge_fraction(labels), faint_fraction=faint,
                   outline_ratio=gmd / outline if known and outline > 0 else math.nan,
                   classical_ratio=gmd / classical_gmd if known and classical_gmd > 0 else math.nan,
                   classical_count_ratio=count / classical_count if count and classical_count else math.nan,
                   half_scale_ratio=half_scale_gmd / gmd if known and half_scale_gmd > 0 else math.nan)


def _gmd(seg: Segmentation) -> float:
    d = np.asarray(seg.diameters, dtype=np.float64)
    w = None if seg.weights is None else np.asarray(seg.weights, dtype=np.float64)[d > 0]
    return geometric_stats(d[d > 0], w)[0] if (d > 0).any() else math.nan


def cross_check(image: np.ndarray, segment: Callable[[np.ndarray], Segmentation], dark_particles: bool,
                classical: bool = True) -> dict[str, float]:
    """The other analyses a result is compared with.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image that was analysed.
    segment : callable
        The result's own method, ``segment(image) -> Segmentation``; run on the image at half scale.
    dark_particles : bool
        Particle polarity, for the classical watershed.
    classical : bool
        Run the classical watershed on the same image (not when the result is the watershed's own).

    Returns
    -------
    dict
        ``classical_gmd``, ``classical_count`` and ``half_scale_gmd`` (those measured): keyword
        arguments of :func:`measure`.
    """
    out = {}
    if classical:
        reference = watershed_segment(image, dark_particles=dark_particles)
        out.update(classical_gmd=_gmd(reference), classical_count=len(reference.diameters))
    shape = (round(image.shape[0] / 2), round(image.shape[1] / 2))
    if min(shape) >= 16:
        half = np.clip(resample(np.asarray(image, np.float32), shape), float(image.min()), float(image.max()))
        out["half_scale_gmd"] = 2 * _gmd(segment(half.astype(image.dtype)))
    return out


def beyond(kind: str, threshold: float, value: float) -> bool:
    """Whether a signal lies beyond its threshold.

    Parameters
    ----------
    kind : str
        ``"min"`` (flag below), ``"max"`` (flag above) or ``"band"`` (flag a ratio beyond the
        factor ``threshold`` either way).
    threshold : float
        The threshold.
    value : float
        The signal; NaN (not measured) never lies beyond.

    Returns
    -------
    bool
    """
    if math.isnan(value):
        return False
    if kind == "min":
        return value < threshold
    if kind == "max":
        return value > threshold
    return value <= 0 or abs(math.log(value)) > math.log(threshold)


def judge(signals: Signals, thresholds: dict[str, tuple[str, float]] | None = None) -> tuple[str, ...]:
    """The verdict on a result.

    Parameters
    ----------
    signals : Signals
        The result's signals.
    thresholds : dict, optional
        Signal -> (kind, threshold); default :data:`THRESHOLDS`.

    Returns
    -------
    tuple of str
        One warning per signal beyond its threshold ("no particles were found" alone when there
        are none); empty when the result can be trusted.
    """
    if signals.count == 0:
        return ("no particles were found",)
    out = []
    values = signals.as_dict()
    for name, (kind, threshold) in (THRESHOLDS if thresholds is None else thresholds).items():
        if beyond(kind, threshold, values[name]):
            bound = "at least" if kind == "min" else "at most"
            out.append(REASONS[name].format(value=values[name], threshold=threshold, bound=bound))
    return tuple(out)


def assess(image: np.ndarray, labels: np.ndarray, diameters: np.ndarray | None = None,
           weights: np.ndarray | None = None, **others: float) -> Quality:
    """Signals and verdict of a result.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image that was analysed.
    labels : numpy.ndarray
        Its instance labels (0 background).
    diameters : numpy.ndarray, optional
        The particles' diameters, px (default: equivalent-circle diameters of the labels).
    weights : numpy.ndarray, optional
        How many particles each stands for (default 1).
    **others : float
        ``classical_gmd``, ``classical_count``, ``half_scale_gmd`` (:func:`cross_check`).

    Returns
    -------
    Quality
    """
    labels = np.asarray(labels)
    if diameters is None:
        area = np.bincount(labels.ravel())[1:]
        diameters = 2.0 * np.sqrt(area[area > 0] / np.pi)
    signals = measure(image, labels, diameters, weights, **others)
    return Quality(signals, judge(signals))
