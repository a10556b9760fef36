"""What every electron micrograph may carry besides the micrograph: the instrument's information
bar. Shared science of the services that analyse images (particle sizes, SEM): it depends on numpy
alone, and it is part of the serving code of exactly the domains whose serving code imports it
(``nanolens_runtime.service.serving_code_sha256``)."""

from __future__ import annotations

import numpy as np


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
