"""CNN primary-particle segmentation: ONNX inference and post-processing (no torch here).

The network (a small U-Net, trained by :mod:`nanolens_tem.training.cnn_train`) maps a normalised
grey image to four maps at full resolution:

====  ===========  ==========================================================================
 ch    name         meaning
====  ===========  ==========================================================================
 0     fg           logit: pixel belongs to a particle
 1     boundary     logit: pixel lies on a boundary between two touching/overlapping particles
 2     dist         normalised distance to the particle's own outline, ``1 - rho / r`` for a
                    sphere of radius ``r`` (1 at the centre, 0 at the edge); for real masks the
                    instance's distance transform divided by its maximum
 3     radius       the particle's radius in units of :data:`RADIUS_UNIT` px (of the *whole*
                    particle, including parts hidden behind others)
====  ===========  ==========================================================================

Instances: seeds are connected components of ``dist > seed_level`` inside the foreground and
away from boundaries, grown by a watershed on ``-dist`` restricted to the foreground. There is no
limit on the number of particles per agglomerate. Each instance's diameter is ``2 x`` the median
predicted radius over its pixels (robust to occlusion), widened about the image's geometric mean
by the bundle's ``radius_spread`` (the radius map regresses towards the sizes around a particle),
or its equivalent-circle diameter. A bundle with a detection model also weights each instance
for the particles hidden like it that were not found (:mod:`nanolens_tem.science.occlusion`).

Large images are processed in overlapping tiles whose raw outputs are blended with a separable
weight window that falls to (almost) zero at tile borders, so that no seams appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.measure import label
from skimage.segmentation import watershed

from nanolens_micrographs.scale import correlation_radius
from nanolens_tem.science.occlusion import DetectionModel
from nanolens_tem.science.segmentation import (
    ScaleChoice,
    Segmentation,
    centres,
    estimate_radius,
    foreground_mask,
    relabel,
)

__all__ = ["RADIUS_UNIT", "OUT_CHANNELS", "normalise", "blend_window", "tile_layout", "tiled_predict",
           "instances_from_maps", "auto_scale", "typical_radius", "CnnSegmenter"]

RADIUS_UNIT = 32.0
OUT_CHANNELS = ("fg", "boundary", "dist", "radius")
MULTIPLE = 16   # the U-Net downsamples 4 times


def normalise(image: np.ndarray) -> np.ndarray:
    """Robust per-image scaling for the network.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image of any numeric dtype.

    Returns
    -------
    numpy.ndarray
        float32 (H, W): the 1st percentile at -0.5 and the 99th at +0.5.
    """
    x = np.asarray(image, np.float32)
    lo, hi = np.percentile(x, [1.0, 99.0])
    return ((x - lo) / max(float(hi - lo), 1e-6) - 0.5).astype(np.float32)


def blend_window(size: int, overlap: int) -> np.ndarray:
    """One-dimensional weights that blend overlapping tiles.

    Parameters
    ----------
    size : int
        Tile side, px.
    overlap : int
        Length of the ramp at each end, px.

    Returns
    -------
    numpy.ndarray
        (size,) raised-cosine ramps at both ends and 1 inside, floored at 1e-3.
    """
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return np.maximum(w, 1e-3)


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    return np.pad(x, ((0, ph), (0, pw)), mode="reflect") if ph or pw else x


def _ceil16(n: float) -> int:
    return int(np.ceil(n / MULTIPLE) * MULTIPLE)


def tile_layout(n: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """Tile side and start offsets along one axis.

    The fewest tiles of at most ``tile`` px that overlap by at least ``overlap``, made as small as
    that allows (a multiple of 16) and spread evenly: a 2048 px side takes 5 tiles of 464 px, not
    5 of 512 (18 % fewer pixels through the network). An axis that fits is one tile, padded to a
    multiple of 16.

    Parameters
    ----------
    n : int
        Length of the axis, px.
    tile : int
        Largest tile side, px.
    overlap : int
        Least overlap of neighbouring tiles, px.

    Returns
    -------
    size : int
        Tile side, px.
    starts : list of int
        Start offset of each tile.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile {tile} px with overlap {overlap} px: the overlap must be at least 0 and less "
                         "than the tile")
    if n <= tile:
        return max(_ceil16(n), MULTIPLE), [0]
    k = int(np.ceil((n - overlap) / (tile - overlap)))
    size = _ceil16((n + (k - 1) * overlap) / k)
    return size, [i * (n - size) // (k - 1) for i in range(k)]


def tiled_predict(run, x: np.ndarray, tile: int = 512, overlap: int = 64) -> np.ndarray:
    """Apply ``run`` ((1, 1, h, w) -> (1, C, h, w)) to a 2D array in blended tiles
    (:func:`tile_layout` along each axis).

    Parameters
    ----------
    run : callable
        The network on one padded tile (sides multiples of 16).
    x : (H, W) float32
        Normalised image.
    tile : int
        Largest tile side in px (rounded up to a multiple of 16). Images that fit are run whole.
    overlap : int
        Least overlap between neighbouring tiles in px; also the length of the blending ramps.

    Returns
    -------
    (C, H, W) float32
        Blended raw network outputs.
    """
    h, w = x.shape
    tile = _ceil16(tile)
    (th, ys), (tw, xs) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    xp = _pad_to(x, max(h, th), max(w, tw))
    if len(ys) == len(xs) == 1:
        return run(xp[None, None])[0, :, :h, :w]
    hp, wp = xp.shape
    acc, wsum = None, np.zeros((hp, wp), np.float32)
    for y0 in ys:
        wy = blend_window(th, overlap if len(ys) > 1 else 0)
        if y0 == ys[0]:
            wy[: overlap] = 1.0
        if y0 == ys[-1]:
            wy[th - overlap:] = 1.0
        for x0 in xs:
            wx = blend_window(tw, overlap if len(xs) > 1 else 0)
            if x0 == xs[0]:
                wx[: overlap] = 1.0
            if x0 == xs[-1]:
                wx[tw - overlap:] = 1.0
            out = run(xp[None, None, y0:y0 + th, x0:x0 + tw])[0]
            if acc is None:
                acc = np.zeros((out.shape[0], hp, wp), np.float32)
            wt = wy[:, None] * wx[None, :]
            acc[:, y0:y0 + th, x0:x0 + tw] += out * wt
            wsum[y0:y0 + th, x0:x0 + tw] += wt
    return (acc / wsum)[:, :h, :w]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def label_medians(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Median of a value over each label, by one sort of the labelled pixels.

    The same as ``scipy.ndimage.median`` with every label present, but 0.16 s instead of 1.07 s
    for the 1 590 instances of the 2048 x 2048 benchmark image.

    Parameters
    ----------
    values : numpy.ndarray
        Per-pixel values, the shape of ``labels``.
    labels : numpy.ndarray
        Integer labels, 0 for background.
    n : int
        Number of labels; every label ``1..n`` must be present.

    Returns
    -------
    numpy.ndarray
        (n,) medians.
    """
    flat = labels.ravel()
    inside = flat > 0
    lab, val = flat[inside], values.ravel()[inside].astype(np.float64)
    val = val[np.lexsort((val, lab))]
    counts = np.bincount(lab, minlength=n + 1)[1:]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    return (val[starts + (counts - 1) // 2] + val[starts + counts // 2]) / 2


def instances_from_maps(maps: np.ndarray, *, fg_threshold: float = 0.5, seed_level: float = 0.45,
                        boundary_threshold: float = 0.5, min_seed_area: int = 4, min_area: int = 12,
                        diameter: str = "radius", radius_spread: float = 1.0) -> Segmentation:
    """Particle instances from the network's four output maps.

    Parameters
    ----------
    maps : numpy.ndarray
        (4, H, W): foreground and boundary logits, the distance to the particle's edge
        (normalised to 0-1 at its centre) and the radius (in units of :data:`RADIUS_UNIT` px).
    fg_threshold : float, optional
        Foreground probability above which a pixel belongs to a particle.
    seed_level : float, optional
        Normalised edge distance above which a foreground pixel seeds its particle.
    boundary_threshold : float, optional
        Boundary probability above which a pixel separates touching particles.
    min_seed_area, min_area : int, optional
        Smallest seed and instance, px^2.
    diameter : {"radius", "area"}, optional
        Size each instance from the predicted radius map (which includes hidden parts) or by its
        equivalent-circle diameter.
    radius_spread : float, optional
        Radius sizing only: widens the log diameters of the image's instances about their
        geometric mean by this factor. The radius map pulls each particle towards the sizes around
        it, and a model's bundle states the factor that undoes this
        (:mod:`nanolens_tem.training.calibrate`).

    Returns
    -------
    Segmentation
        Labels, diameters (px) and centres of the instances.
    """
    if radius_spread <= 0 or not np.isfinite(radius_spread):
        raise ValueError(f"radius_spread {radius_spread}: expected a positive factor")
    fg = _sigmoid(maps[0]) > fg_threshold
    bnd = _sigmoid(maps[1]) > boundary_threshold
    dist = np.clip(maps[2], 0.0, 1.0)
    seeds = label(fg & ~bnd & (dist > seed_level))
    area = np.bincount(seeds.ravel())
    small = area < min_seed_area
    small[0] = False
    seeds[small[seeds]] = 0
    # foreground components without any seed still become one particle
    comp = label(fg)
    missing = np.setdiff1d(np.unique(comp[fg]), np.unique(comp[seeds > 0]))
    if len(missing):
        seeds = np.where(np.isin(comp, missing) & (seeds == 0), comp + seeds.max(), seeds)
    lab = watershed(-dist, seeds, mask=fg)
    lab = relabel(lab, min_area)
    n = int(lab.max())
    if n == 0:
        return Segmentation(lab, np.zeros(0), np.zeros((0, 2)))
    if diameter == "radius":
        r = np.maximum(maps[3], 0) * RADIUS_UNIT
        d = 2.0 * label_medians(r, lab, n)
        sized = d > 0  # an instance where the map reads no radius stays at 0
        if radius_spread != 1.0 and sized.sum() >= 2:
            centre = np.log(d[sized]).mean()
            d[sized] = np.exp(centre + radius_spread * (np.log(d[sized]) - centre))
    else:
        d = 2.0 * np.sqrt(np.bincount(lab.ravel())[1:] / np.pi)
    return Segmentation(lab, d, centres(lab))


#: typical primary-particle radius (px) of the training images; ``scale="auto"`` brings larger
#: particles to about this size before the network sees them
TARGET_RADIUS = 12.0
MAX_RADIUS = 18.0


#: a coarse radius estimate (on the 2 x 2 binned image) below this fraction of the resampling
#: limit means "no resampling" without the full-resolution estimate. Coarse / full read 0.78 to
#: 3.7 (1st percentile 0.91) on the 1 530 evaluation images (500 per synthetic condition, 30 real)
#: and 1.00 to 1.65 on 21 large ones (the benchmark mosaic at 7 scales, 8 carbon-black and 6
#: magnified gold micrographs); none of them changed its decision. The margin leaves 10 % below
#: the lowest ratio seen. It saves about 0.8 s of 1.2 s on a 2048 px image.
COARSE_MARGIN = 0.7


def _binned_mask(image: np.ndarray, dark_particles: bool) -> np.ndarray:
    """The foreground mask of the 2 x 2 binned image: its smoothing halves (1 -> 0.5 px) and its
    smallest object quarters (30 -> 8 px^2)."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    small = np.asarray(image, np.float32)[:2 * h, :2 * w].reshape(h, 2, w, 2).mean((1, 3))
    return foreground_mask(small, dark_particles=dark_particles, smooth_sigma=0.5, min_size=8)


def _radius(image: np.ndarray, dark_particles: bool, binned: bool = False) -> float:
    if not binned:
        return estimate_radius(foreground_mask(image, dark_particles=dark_particles))
    return 2.0 * estimate_radius(_binned_mask(image, dark_particles))


def auto_scale(image: np.ndarray, dark_particles: bool = True, target_radius: float = TARGET_RADIUS) -> float:
    """Resampling factor that brings particles larger than the network's training range into it,
    from the foreground mask alone (the fine-tuning's resampling of real images; inference chooses
    the scale with the network itself, :meth:`CnnSegmenter.choose_scale`).

    Images of at least 64 x 64 px are first estimated on the binned image (see
    :data:`COARSE_MARGIN`).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey-level image.
    dark_particles : bool, optional
        Bright-field contrast (particles darker than the background).
    target_radius : float, optional
        Particle radius (px) the network was trained around.

    Returns
    -------
    float
        1.0 when the estimated radius is already in range, < 1 for large particles.
    """
    limit = max(MAX_RADIUS, target_radius)
    if min(image.shape) >= 64 and _radius(image, dark_particles, binned=True) < COARSE_MARGIN * limit:
        return 1.0
    r = _radius(image, dark_particles)
    return target_radius / r if r > limit else 1.0


def resample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling, anti-aliased when shrinking.

    Parameters
    ----------
    a : numpy.ndarray
        (H, W) or (C, H, W) float array.
    shape : tuple of int
        Target (H, W).

    Returns
    -------
    numpy.ndarray
        float32 array of the target shape (with the channel axis kept).
    """
    from skimage.transform import resize

    out_shape = shape if a.ndim == 2 else (a.shape[0], *shape)
    shrink = shape[0] < a.shape[-2]
    return resize(a, out_shape, order=1, mode="reflect", anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def rescale(x: np.ndarray, f: float) -> np.ndarray:
    """An image resampled by a factor; a large reduction first averages blocks of k x k pixels (an
    anti-aliasing filter at a fraction of the cost of the Gaussian one on the whole image), then
    resamples the rest of the way.

    Parameters
    ----------
    x : numpy.ndarray
        (H, W) image.
    f : float
        Factor: below 1 smaller, above 1 larger.

    Returns
    -------
    numpy.ndarray
        The resampled image, sides ``round(H * f)`` and ``round(W * f)``, at least 16 px.
    """
    h, w = x.shape
    shape = (max(16, round(h * f)), max(16, round(w * f)))
    k = int(1 / (2 * f)) if f < 0.5 else 1
    if k > 1:
        x = x[:h // k * k, :w // k * k].reshape(h // k, k, w // k, k).mean((1, 3))
    return resample(x, shape)


#: ``scale="auto"``: the factor is accepted when the network's typical radius on the probe window
#: is within this fraction of :data:`TARGET_RADIUS`; a factor this close to 1 runs unresampled
SCALE_TOLERANCE = 0.03
#: most network runs on the probe window while searching for the factor
SCALE_PASSES = 6
#: the factors searched: at most 32 times smaller and 4 times larger, and the resampled image at
#: most this many pixels (a 2048 px image of particles 2 px across is not enlarged: the time)
SCALE_LIMITS = (1 / 32, 4.0)
MAX_NETWORK_PIXELS = 2048 * 2048
#: side (px, as the network sees it) of the window the factor is measured on
PROBE = 512


def typical_radius(maps: np.ndarray, min_area: int = 12) -> float:
    """The particles' typical radius in the network's maps: the median of the radius map over the
    foreground (each particle weighed by its area, so specks of noise count little).

    Parameters
    ----------
    maps : numpy.ndarray
        The network's output maps (C, H, W): channel 0 the foreground logit, channel 3 the radius.
    min_area : int
        Fewest foreground pixels for a radius to be read.

    Returns
    -------
    float
        The typical radius in the maps' pixels; 0 when fewer than ``min_area`` pixels are foreground.
    """
    fg = maps[0] > 0.0  # logit: probability above 0.5
    if fg.sum() < min_area:
        return 0.0
    return float(np.median(np.maximum(maps[3][fg], 0.0))) * RADIUS_UNIT


@dataclass
class CnnSegmenter:
    """ONNX U-Net segmenter. Load with :meth:`from_bundle` or :meth:`from_onnx`.

    ``scale``: a fixed resampling factor (``1.0``, the default: the image's own scale), or ``"auto"``
    (:meth:`choose_scale`). Auto makes sizes independent of the magnification but, on the real
    labelled sets, further from the masks than the image's own scale (docs/tem-evaluation.md).
    """

    session: object
    tile: int = 512
    overlap: int = 64
    scale: float | str = 1.0
    target_radius: float = TARGET_RADIUS
    # onnxruntime.RunOptions for every tile's run: setting its ``terminate`` from another thread
    # stops the segmentation (a caller's deadline passed).
    run_options: object = None
    #: see :func:`instances_from_maps`; from the bundle's ``postprocessing`` (1: sizes as predicted)
    radius_spread: float = 1.0
    #: occlusion weights of the size distribution (:mod:`nanolens_tem.science.occlusion`), from the
    #: bundle's ``postprocessing.detection`` (bundles before ``tem-unet`` 1.5.0: none)
    detection: DetectionModel | None = None

    @classmethod
    def from_session(cls, session, preprocessing: dict, postprocessing: dict | None = None, **kw) -> CnnSegmenter:
        """A segmenter on an existing session, with the bundle manifest's pre- and
        post-processing parameters (bundles before ``tem-unet`` 1.3.0 have no post-processing)."""
        kw.setdefault("target_radius", float(preprocessing.get("target_radius_px", TARGET_RADIUS)))
        kw.setdefault("tile", int(preprocessing.get("tile", 512)))
        kw.setdefault("overlap", int(preprocessing.get("overlap", 64)))
        post = postprocessing or {}
        kw.setdefault("radius_spread", float(post.get("radius_spread", 1.0)))
        if "detection" in post:
            kw.setdefault("detection", DetectionModel.from_json(post["detection"]))
        return cls(session, **kw)

    @classmethod
    def from_onnx(cls, path_or_bytes, **kw) -> CnnSegmenter:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = kw.pop("threads", 0)
        src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
        sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return cls(sess, **kw)

    @classmethod
    def from_bundle(cls, path: Path, **kw) -> CnnSegmenter:
        from nanolens_runtime.bundles import ModelBundle

        b = ModelBundle.load(Path(path))
        session = cls.from_onnx(Path(b.onnx_path), threads=kw.pop("threads", 0)).session
        return cls.from_session(session, b.manifest.get("preprocessing", {}), b.manifest.get("postprocessing"), **kw)

    def _run(self, x: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: np.ascontiguousarray(x, np.float32)}, self.run_options)[0]

    def predict_maps(self, image: np.ndarray, *, dark_particles: bool = True, tta: bool = False,
                     scale: ScaleChoice | None = None) -> np.ndarray:
        """Raw blended output maps (4, H, W) for a grey image (dark particles by default), the
        network run at ``scale`` (default: :meth:`choose_scale`) and its maps brought back to the
        image's pixels (the radius map in them too).

        ``tta``: test-time augmentation, the mean of the maps of the image's 8 rotations and
        reflections, each turned back (8 times the time), all at the scale chosen on the image as
        it is. The four maps are invariant under those transforms, so their mean is too: a rotated
        image gives the rotated maps."""
        if tta:
            scale = scale or self.choose_scale(image, dark_particles)
            total = np.zeros((4, *image.shape), np.float32)
            for turns in range(4):
                for mirror in (False, True):
                    view = np.rot90(image, turns)
                    view = view[:, ::-1] if mirror else view
                    maps = self.predict_maps(np.ascontiguousarray(view), dark_particles=dark_particles, scale=scale)
                    maps = maps[:, :, ::-1] if mirror else maps
                    total += np.rot90(maps, -turns, axes=(1, 2))
            return total / 8
        x = normalise(image)
        if not dark_particles:
            x = -x
        f = (scale or self._choose(x)).factor
        if abs(f - 1.0) < 1e-3:
            return tiled_predict(self._run, x, self.tile, self.overlap)
        maps = resample(tiled_predict(self._run, rescale(x, f), self.tile, self.overlap), x.shape)
        maps[3] /= f
        return maps

    def choose_scale(self, image: np.ndarray, dark_particles: bool = True) -> ScaleChoice:
        """The factor the image is resampled by before the network: the segmenter's ``scale``
        when it names one, else chosen from the image so that the sizes in nm do not depend on the
        magnification.

        The network sizes particles of the sizes it was trained on (radius about 5-24 px) and
        splits larger ones or misses smaller ones, and its sizes drift a little with the scale
        even inside that range. So the factor is the one at which the network itself measures the
        particles' typical radius (:func:`typical_radius`) as :data:`TARGET_RADIUS`, the middle of
        its training range: the same specimen at any magnification then reaches the network at
        the same size. The search starts from the image's correlation length
        (:func:`correlation_radius`, which follows the specimen at any magnification, so the
        search finds the same one of the sizes an image may hold: film grain, particles,
        agglomerates) and runs the network on a probe window of :data:`PROBE` px around the
        centre of the image's contrast, by secant steps in log scale, until the radius is within
        :data:`SCALE_TOLERANCE`; at most :data:`SCALE_PASSES` runs, within :data:`SCALE_LIMITS`.

        Parameters
        ----------
        image : numpy.ndarray
            (H, W) grey-level image.
        dark_particles : bool, optional
            Bright-field contrast (particles darker than the background).

        Returns
        -------
        ScaleChoice
            The factor, its source and the typical radius measured (image px).
        """
        x = normalise(image)
        return self._choose(x if dark_particles else -x)

    def _choose(self, x: np.ndarray) -> ScaleChoice:
        if self.scale != "auto":
            return ScaleChoice(float(self.scale), "request")
        h, w = x.shape
        lo = max(SCALE_LIMITS[0], 16 / min(h, w))
        hi = max(lo, min(SCALE_LIMITS[1], float(np.sqrt(MAX_NETWORK_PIXELS / (h * w)))))
        r0, centre = correlation_radius(x)
        f = float(np.clip(self.target_radius / r0 if r0 > 0 else 1.0, lo, hi))
        tried: list[tuple[float, float]] = []  # (log factor, log(radius / target))
        passes = 0
        tol = np.log1p(SCALE_TOLERANCE)
        while passes < SCALE_PASSES:
            passes += 1
            r = self._probe(x, f, centre)
            if r <= 0:  # nothing seen: the particles may be too small at this factor
                if f >= hi:
                    break
                f = min(2 * f, hi)
                continue
            u, e = float(np.log(f)), float(np.log(r / self.target_radius))
            tried.append((u, e))
            if abs(e) <= tol:
                break
            below, above = [t for t in tried if t[1] < 0], [t for t in tried if t[1] > 0]
            if below and above:  # bracketed: the secant between the nearest samples either side
                (u1, e1), (u2, e2) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
                step = u1 - e1 * (u2 - u1) / (e2 - e1) - u
            else:  # the radius grows about as the factor (slope 1) until the network's range ends
                slope = 1.0
                if len(tried) > 1 and tried[-1][0] != tried[-2][0]:
                    slope = float(np.clip((e - tried[-2][1]) / (u - tried[-2][0]), 0.5, 1.5))
                step = float(np.clip(-e / slope, -np.log(8), np.log(8)))
            nxt = float(np.clip(np.exp(u + step), lo, hi))
            if abs(np.log(nxt / f)) < 1e-3:  # at a limit of the search
                break
            f = nxt
        if not tried:
            return ScaleChoice(1.0, "image", passes=passes)
        u, e = min(tried, key=lambda t: abs(t[1]))
        f = float(np.exp(u))
        return ScaleChoice(1.0 if abs(u) <= tol else f, "image", float(self.target_radius * np.exp(e) / f), passes)

    def _probe(self, x: np.ndarray, f: float, centre: np.ndarray) -> float:
        """:func:`typical_radius` (network px) of a window of about :data:`PROBE` network px
        around ``centre`` (fractions of the image's height and width) resampled by ``f``."""
        h, w = x.shape
        side = int(np.ceil(PROBE / f))
        rows, cols = min(h, side), min(w, side)
        r0 = int(np.clip(round(centre[0] * h - rows / 2), 0, h - rows))
        c0 = int(np.clip(round(centre[1] * w - cols / 2), 0, w - cols))
        window = x[r0:r0 + rows, c0:c0 + cols]
        if abs(f - 1.0) >= 1e-3:
            window = rescale(window, f)
        return typical_radius(tiled_predict(self._run, window, self.tile, self.overlap))

    def segment(self, image: np.ndarray, *, dark_particles: bool = True, tta: bool = False, **kw) -> Segmentation:
        """Primary-particle instances of a grey image; ``tta``: see :meth:`predict_maps`; ``kw`` go
        to :func:`instances_from_maps`.

        With radius sizing and a detection model, the instances carry occlusion weights; with
        ``diameter="area"`` (the visible area) they do not, since hidden parts are not measured."""
        kw.setdefault("radius_spread", self.radius_spread)
        scale = self.choose_scale(image, dark_particles)
        seg = instances_from_maps(self.predict_maps(image, dark_particles=dark_particles, tta=tta, scale=scale), **kw)
        seg.scale = scale
        if self.detection is not None and kw.get("diameter", "radius") == "radius":
            seg.weights = self.detection.weights(seg.labels, seg.diameters)
        return seg
