"""Preparing SEM images for the autoencoder: intensity scaling, the information bar, windows."""

from __future__ import annotations

import numpy as np

MULTIPLE = 16  # the network's total stride: window sides are multiples of it


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
    x = image.astype(np.float32, copy=False)
    step = max(1, int(np.sqrt(x.size / 2_000_000)))  # percentiles of a subsample: bounded time and memory
    lo, hi = np.percentile(x[::step, ::step], [low, high])
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def detect_info_bar(image: np.ndarray, max_fraction: float = 0.25) -> int:
    """Rows at the bottom that hold an instrument's information bar (FEI, Zeiss, JEOL style).

    A bar row is nearly all at the image's extreme levels (black or white text on black, or
    the reverse) with few mid-tones, unlike a micrograph row; the bar is the longest such band
    touching the bottom edge (text lines with gaps between them count as one band), and it must
    end at a row where the micrograph's mid-tones come back.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    max_fraction : float
        Largest fraction of the height a bar may take.

    Returns
    -------
    int
        Number of rows to exclude at the bottom (0: no bar).
    """
    h = image.shape[0]
    limit = int(h * max_fraction)
    if limit < 4:
        return 0
    part = image[h - limit:].astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return 0
    scaled = (part - lo) / (hi - lo)
    extreme = ((scaled <= 0.04) | (scaled >= 0.96)).mean(axis=1)  # per row, bottom part
    is_bar = extreme >= 0.9
    rows = 0
    for i in range(limit - 1, -1, -1):  # from the bottom row up
        if is_bar[i]:
            rows = limit - i
        elif limit - i - rows > 3:  # more than 3 micrograph-like rows above the band: it ended
            break
    if rows < 8:  # a few dark rows at the edge are not a bar
        return 0
    return rows


def pad_to_multiple(image: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Reflect-pad the bottom and right edges to sides that are multiples of ``multiple``.

    Parameters
    ----------
    image : numpy.ndarray
        H x W array.
    multiple : int
        The side multiple, px.

    Returns
    -------
    numpy.ndarray
        H' x W' array, H' and W' the next multiples (at least ``multiple``).
    """
    h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if h + ph < multiple:
        ph = multiple - h
    if w + pw < multiple:
        pw = multiple - w
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "edge"
        image = np.pad(image, ((0, ph), (0, pw)), mode=mode)
    return image


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
            keep_info_bar: bool = False) -> tuple[np.ndarray, int]:
    """What the autoencoder sees of an image: the information bar cut off, intensities 0-1.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    percentiles : tuple of float
        The manifest's normalisation percentiles (``normalise``).
    keep_info_bar : bool
        Keep the bottom rows even if they look like an information bar.

    Returns
    -------
    tuple
        The h x W float32 image (0-1) and the number of rows cut off.
    """
    bar = 0 if keep_info_bar else detect_info_bar(image)
    return normalise(image[:image.shape[0] - bar], *percentiles), bar
