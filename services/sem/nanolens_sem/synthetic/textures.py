"""A seeded generator of SEM-like textures with known ground truth.

Each image is one of four morphologies on a rough, shaded substrate, rendered the way a
secondary-electron image looks: bright edges (the edge effect), a slow shading gradient, and
Poisson-like shot noise. The morphology is the label:

``particles``
    round grains (radius 3-9 px) scattered at random, some touching;
``wires``
    straight rods (width 3-6 px, length 15-60 px) at random angles, as nanowires lying down;
``porous``
    a thresholded smooth noise field: a sponge of pores;
``fibres``
    thin curved strands (width 1-2 px) over the substrate, as cell protrusions.

``generate(seed, shape, kind)`` returns the image (float32, 0-1), the label and an ``anomaly``
mask (a bright charging blob, present when ``anomaly=True``); the same seed gives the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

KINDS = ("particles", "wires", "porous", "fibres")


@dataclass
class Texture:
    image: np.ndarray  # H x W float32 in 0..1
    kind: str
    mask: np.ndarray  # H x W bool: the objects
    anomaly: np.ndarray  # H x W bool: the injected defect (all False without one)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-9)


def _objects(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros(shape, bool)
    area = h * w
    if kind == "particles":
        for _ in range(int(area / 400 * rng.uniform(0.5, 1.5))):
            r = rng.uniform(3, 9)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == "wires":
        for _ in range(int(area / 1500 * rng.uniform(0.5, 1.5)) + 1):
            width, length = rng.uniform(3, 6), rng.uniform(15, 60)
            cy, cx, a = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi)
            u = (yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)
            v = -(yy - cy) * np.cos(a) + (xx - cx) * np.sin(a)
            mask |= (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    elif kind == "porous":
        mask = _smooth_noise(rng, shape, rng.uniform(2, 5)) > rng.uniform(-0.3, 0.5)
    elif kind == "fibres":
        for _ in range(int(area / 1200 * rng.uniform(0.5, 1.5)) + 1):
            y, x, a = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi)
            width = rng.uniform(0.6, 1.2)
            for _ in range(int(rng.uniform(30, 120))):
                a += rng.normal(0, 0.15)
                y, x = y + np.sin(a), x + np.cos(a)
                iy, ix = int(round(y)), int(round(x))
                r = int(np.ceil(width))
                mask[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1] = True
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return mask


def generate(seed: int, shape: tuple[int, int] = (128, 128), kind: str | None = None,
             anomaly: bool = False) -> Texture:
    """One SEM-like image.

    Parameters
    ----------
    seed : int
        Seed of the generator; the same seed, shape and kind give the same image.
    shape : tuple of int
        Height and width in px.
    kind : str, optional
        One of ``KINDS``; None: chosen by the seed.
    anomaly : bool
        Add a saturated charging blob (radius 6-14 px) at a random place.

    Returns
    -------
    Texture
        The image (float32, 0-1), its kind, the objects' mask and the anomaly mask.
    """
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    mask = _objects(rng, shape, kind)
    substrate = 0.25 + 0.04 * _smooth_noise(rng, shape, 1.5) + 0.05 * _smooth_noise(rng, shape, 20)
    height = ndimage.gaussian_filter(mask.astype(float), 1.0)
    edges = ndimage.gaussian_gradient_magnitude(mask.astype(float), 1.0)
    img = substrate + rng.uniform(0.15, 0.35) * height + rng.uniform(0.6, 1.2) * edges
    gy, gx = rng.uniform(-0.1, 0.1, 2)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img += gy * yy / shape[0] + gx * xx / shape[1]
    defect = np.zeros(shape, bool)
    if anomaly:
        r, cy, cx = rng.uniform(6, 14), rng.uniform(0.2, 0.8) * shape[0], rng.uniform(0.2, 0.8) * shape[1]
        defect = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = np.where(defect, 0.98, img)
    dose = rng.uniform(40, 200)
    img = rng.poisson(np.clip(img, 0, 1) * dose) / dose
    return Texture(np.clip(img, 0, 1).astype(np.float32), kind, mask, defect)


def with_info_bar(image: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """``image`` with an instrument information bar of ``rows`` rows appended at the bottom: black
    with white text-like marks and a scale bar, as FEI and Zeiss instruments write it.

    Parameters
    ----------
    image : numpy.ndarray
        H x W image, float 0-1 or integers.
    rows : int
        Height of the bar in px.
    seed : int
        Seed of the text marks.

    Returns
    -------
    numpy.ndarray
        (H + rows) x W image of ``image``'s dtype.
    """
    rng = np.random.default_rng(seed)
    top = 1.0 if image.dtype.kind == "f" else np.iinfo(image.dtype).max
    bar = np.zeros((rows, image.shape[1]), image.dtype)
    for _ in range(max(image.shape[1] // 12, 1)):  # glyph-like marks
        y, x = int(rng.integers(2, max(rows - 8, 3))), int(rng.integers(0, image.shape[1] - 4))
        bar[y:y + 6, x:x + int(rng.integers(1, 4))] = top
    bar[rows // 2:rows // 2 + 2, 8:8 + image.shape[1] // 5] = top  # scale bar
    return np.concatenate([image, bar])
