"""Preparing SEM images for the autoencoder: intensity scaling, windows (the information bar is
shared science: ``nanolens_micrographs``)."""

from __future__ import annotations

import numpy as np

from nanolens_micrographs import detect_info_bar

MULTIPLE = 16  # the network's total stride: window sides are multiples of it


def intensity_range(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The intensities at two percentiles, from a subsample (bounded time and memory).

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    low, high : float
        Percentiles, 0-100.

    Returns
    -------
    tuple of float
        (lo, hi): the values that ``to_unit`` maps to 0 and 1.
    """
    step = max(1, int(np.sqrt(image.size / 2_000_000)))
    lo, hi = np.percentile(image[::step, ::step].astype(np.float32), [low, high])
    return float(lo), float(hi)


def to_unit(image: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Intensities mapped linearly to 0-1 and clipped.

    Parameters
    ----------
    image : numpy.ndarray
        Any shape and numeric dtype.
    scale : tuple of float
        (lo, hi) from ``intensity_range``.

    Returns
    -------
    numpy.ndarray
        float32 of the same shape (zeros when hi <= lo: a constant image).
    """
    lo, hi = scale
    if hi <= lo:
        return np.zeros(image.shape, np.float32)
    x = image.astype(np.float32)
    x -= lo
    x *= 1.0 / (hi - lo)
    return np.clip(x, 0.0, 1.0, out=x)


def normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale intensities to 0-1 between two percentiles (8-bit, 16-bit and float images alike).

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    low, high : float
        Percentiles (0-100) mapped to 0 and 1; values outside are clipped.

    Returns
    -------
    numpy.ndarray
        H x W float32 in 0-1 (a constant image gives zeros).
    """
    return to_unit(image, intensity_range(image, low, high))


def windows(shape: tuple[int, int], size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping windows covering an image, for bounded memory on large images.

    Parameters
    ----------
    shape : tuple of int
        Height and width (multiples of ``MULTIPLE``), px.
    size : int
        Largest window side, a multiple of ``MULTIPLE``, px.

    Returns
    -------
    list of tuple of int
        (row0, col0, row1, col1) per window, row by row.
    """
    h, w = shape
    return [(r, c, min(r + size, h), min(c + size, w)) for r in range(0, h, size) for c in range(0, w, size)]


def area_resize(array: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Shrink the last two axes by area means (bin edges rounded), never enlarging.

    Parameters
    ----------
    array : numpy.ndarray
        ... x H x W array.
    out_shape : tuple of int
        Target height and width (at most H and W), px.

    Returns
    -------
    numpy.ndarray
        ... x h x w float32.
    """
    h, w = array.shape[-2:]
    oh, ow = min(out_shape[0], h), min(out_shape[1], w)
    if (oh, ow) == (h, w):
        return array.astype(np.float32, copy=False)
    rows = np.linspace(0, h, oh + 1).astype(int)
    cols = np.linspace(0, w, ow + 1).astype(int)
    x = np.add.reduceat(array.astype(np.float32, copy=False), rows[:-1], axis=-2)
    x = np.add.reduceat(x, cols[:-1], axis=-1)
    return x / (np.diff(rows)[:, None] * np.diff(cols)[None, :])


def fit_side(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The shape of ``shape`` shrunk so its longer side is at most ``max_side`` (aspect kept).

    Parameters
    ----------
    shape : tuple of int
        Height and width, px.
    max_side : int
        Largest side, px.

    Returns
    -------
    tuple of int
        (height, width), each at least 1.
    """
    h, w = shape
    f = min(1.0, max_side / max(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


def prepare(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5),
            keep_info_bar: bool = False) -> tuple[np.ndarray, int, tuple[float, float]]:
    """What the autoencoder sees of an image: the information bar cut off, and the intensity range
    that maps it to 0-1 (applied window by window in ``lens.run_windows``, so a large image is
    never copied whole as float32).

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    percentiles : tuple of float
        The manifest's normalisation percentiles (``intensity_range``).
    keep_info_bar : bool
        Keep the bottom rows even if they look like an information bar.

    Returns
    -------
    tuple
        The h x W view of the image without the bar, the number of rows cut off, and (lo, hi).
    """
    bar = 0 if keep_info_bar else detect_info_bar(image)
    kept = image[:image.shape[0] - bar]
    return kept, bar, intensity_range(kept, *percentiles)
