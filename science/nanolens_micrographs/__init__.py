"""Science the micrograph domains share: the instrument's information bar every electron
micrograph may carry (particle sizes, SEM), and how far particles found stand out from their
background's noise (particle sizes, movies). It depends on numpy alone, and it is part of the
serving code of exactly the domains whose serving code imports it
(``nanolens_runtime.service.serving_code_sha256``)."""

from __future__ import annotations

import numpy as np

#: fewest pixels on either side for the contrast to be measured at all
MIN_PIXELS = 50
#: a bar row has at least this share of its pixels at one grey level (its background; text,
#: lines, logo and scale bar take the rest). A micrograph row is noisy: a few % at most.
FLAT = 0.5
#: rows of something else inside the bar (a logo, a large glyph, a scale-bar box) it may hold
MAX_GAP = 6
#: fewest rows of a bar: a few flat rows at the edge are not one
MIN_ROWS = 8


def _flatness(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the share of pixels at exactly the row's most common value, and that value. A bar's
    background is drawn, not measured: one value, where a micrograph's grey levels carry noise."""
    ordered = np.sort(part, axis=1)
    width = ordered.shape[1]
    change = np.ones(ordered.shape, bool)
    change[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    starts = np.flatnonzero(change)  # runs of one value, row by row
    lengths = np.diff(np.append(starts, ordered.size))
    row = starts // width
    by_row = np.lexsort((lengths, row))  # within each row, the longest run last
    longest = by_row[np.flatnonzero(np.append(row[by_row][1:] != row[by_row][:-1], True))]
    return lengths[longest] / width, ordered.ravel()[starts[longest]]


def detect_info_bar(image: np.ndarray, max_fraction: float = 0.25) -> int:
    """Rows at the bottom that hold an instrument's information bar (Zeiss, FEI/Thermo, JEOL,
    Hitachi, TESCAN and the like), text lines, frame lines, logo and scale bar included.

    A bar row is flat: at least half of it is the bar's background grey (black, white or any grey
    in between) with text, lines or a logo on it, unlike a noisy micrograph row. The bar is the
    band of such rows touching the bottom edge, with the background level of its bottom rows;
    gaps of up to :data:`MAX_GAP` other rows (a logo, a large glyph) and rows flat at another level
    (frame lines, the panel of a field) belong to it; it ends at its last flat row below a longer
    run of micrograph rows. It must contain something (text): a uniform strip is no bar.

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
    if limit < MIN_ROWS:
        return 0
    flat, level = _flatness(image[h - limit:])
    bar_like = flat >= FLAT
    rows = 0
    for i in range(limit - 1, -1, -1):  # from the bottom row up
        if bar_like[i]:
            rows = limit - i
        elif limit - i - rows > MAX_GAP:  # the micrograph goes on above the last flat row
            break
    if rows < MIN_ROWS:
        return 0
    band = slice(limit - rows, limit)
    background = np.median(level[band][bar_like[band]])
    own = bar_like[band] & (level[band] == background)
    has_marks = (flat[band] < 0.995).sum() >= 2  # text, lines or a scale bar on the background
    if own.sum() < rows / 3 or not has_marks:
        return 0
    return rows



def contrast_to_noise(image: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """How far the pixels called particles stand out from the background's noise.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image of any numeric dtype.
    foreground : numpy.ndarray
        bool H x W, True on particles.

    Returns
    -------
    contrast : float
        |median(particle pixels) - median(background)| over the background's robust standard
        deviation (1.4826 x MAD); noise gives about 1 or less. 0 with under :data:`MIN_PIXELS`
        pixels on either side; capped at 1e6 (a noise-free background).
    spread : float
        The background's robust standard deviation (0 when not measured).
    """
    n_fg = int(foreground.sum())
    if n_fg < MIN_PIXELS or foreground.size - n_fg < MIN_PIXELS:
        return 0.0, 0.0
    values = np.asarray(image, dtype=np.float64)
    background = values[~foreground]
    centre = float(np.median(background))
    spread = 1.4826 * float(np.median(np.abs(background - centre)))
    difference = abs(float(np.median(values[foreground])) - centre)
    cnr = difference / spread if spread > 0 else (np.inf if difference > 0 else 0.0)
    return float(min(cnr, 1e6)), spread
