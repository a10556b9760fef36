"""Frame normalisation, the U-Net's maps and instances (seeded watershed) with their measurements."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.segmentation import watershed

MULTIPLE = 8  # the U-Net pools three times
#: the particle radius (px, as the U-Net sees them) that the binning chosen from a movie aims at:
#: the middle of the 3-16 px the U-Net was trained on
TARGET_RADIUS = 7.0
#: the radii (px) the U-Net was trained on, and the largest instance it may find that is one particle
TRAINED = (3.0, 16.0)
LARGEST_RADIUS = 2 * TRAINED[1]
#: binnings tried when choosing one, and the frames left at least this many px a side
BINNINGS = (1, 2, 3, 4, 6, 8, 12, 16)
MIN_BINNED_SIDE = 32
#: neighbouring binnings agree on a size within this fraction
AGREE = 0.25
COLUMNS = ("label", "row", "col", "area", "diameter", "major", "minor", "eccentricity", "solidity", "orientation")


def flatten(frame: np.ndarray, dark_particles: bool = True, scale: int = 8, sigma: float = 3.0) -> np.ndarray:
    """Divide out the smooth, drifting background and map the frame to about -0.5..0.5.

    Parameters
    ----------
    frame : numpy.ndarray
        H x W counts (any real dtype).
    dark_particles : bool
        True when particles attenuate the beam (bright-field liquid-cell TEM); False inverts.
    scale : int
        Block size (px) of the background estimate (block means, then a Gaussian of ``sigma`` blocks).
    sigma : float
        Smoothing of the background, in blocks.

    Returns
    -------
    numpy.ndarray
        H x W float32: ``(x - p1) / (p99 - p1) - 0.5`` of the flat-fielded frame, particles dark.
    """
    x = np.asarray(frame, np.float32)
    h, w = x.shape
    hb, wb = max(h // scale, 1), max(w // scale, 1)
    blocks = x[:hb * scale, :wb * scale].reshape(hb, scale, wb, scale).mean(axis=(1, 3)) if h >= scale and w >= scale \
        else np.full((1, 1), x.mean(), np.float32)
    smooth = ndi.gaussian_filter(blocks, sigma, mode="nearest")
    bg = ndi.zoom(smooth, (h / smooth.shape[0], w / smooth.shape[1]), order=1, mode="nearest", grid_mode=True)
    bg = np.maximum(bg[:h, :w], 1e-3 * max(float(np.abs(smooth).max()), 1e-6))
    y = x / bg
    if not dark_particles:
        y = -y
    lo, hi = np.percentile(y[:: max(1, h // 256), :: max(1, w // 256)], (1, 99))
    return ((y - lo) / max(hi - lo, 1e-6) - 0.5).astype(np.float32)


def pad_to(x: np.ndarray, multiple: int = MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two axes to a multiple of the network's stride, by reflection.

    Parameters
    ----------
    x : numpy.ndarray
        (..., H, W) array.
    multiple : int, optional
        Side multiple the network needs.

    Returns
    -------
    padded : numpy.ndarray
        (..., H', W') with H' and W' multiples of ``multiple``.
    shape : tuple of int
        The original (H, W), to crop the network's output back.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect")
    return x, (h, w)


def predict_maps(session: ort.InferenceSession, frames: np.ndarray, dark_particles: bool = True,
                 run_options: ort.RunOptions | None = None) -> np.ndarray:
    """The U-Net's foreground and centre probabilities of a batch of frames.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The LPEM U-Net (input ``image`` N x 1 x H x W, output ``maps`` N x 2 x H x W logits).
    frames : numpy.ndarray
        T x H x W raw frames.
    dark_particles : bool
        Polarity (see :func:`flatten`).
    run_options : onnxruntime.RunOptions, optional
        Lets the caller terminate the run.

    Returns
    -------
    numpy.ndarray
        T x 2 x H x W float32 probabilities: foreground, particle centre.
    """
    x = np.stack([flatten(f, dark_particles) for f in frames])[:, None]
    x, (h, w) = pad_to(x)
    logits = session.run(["maps"], {"image": x}, run_options)[0]
    return (1.0 / (1.0 + np.exp(-logits[:, :, :h, :w]))).astype(np.float32)


def instances(maps: np.ndarray, threshold: float = 0.5, min_area: int = 6) -> np.ndarray:
    """Instance labels of one frame from its foreground and centre probabilities.

    Seeds are the connected centre regions inside the foreground; a watershed on the
    foreground probability grows them to the foreground's edge, which splits touching
    particles. Foreground components without a seed become one instance each.

    Parameters
    ----------
    maps : numpy.ndarray
        2 x H x W probabilities (foreground, centre).
    threshold : float
        Probability above which a pixel is foreground (and centre).
    min_area : int
        Instances smaller than this (px) are dropped.

    Returns
    -------
    numpy.ndarray
        H x W int32 labels 1..K (0: liquid).
    """
    fg = maps[0] > threshold
    seeds, n = ndi.label((maps[1] > threshold) & fg)
    comps, nc = ndi.label(fg)
    if nc:
        seeded = np.zeros(nc + 1, bool)
        seeded[np.unique(comps[seeds > 0])] = True
        orphan = ~seeded[comps] & fg
        seeds[orphan] = comps[orphan] + n
    labels = watershed(-maps[0], seeds, mask=fg) if n or nc else np.zeros(fg.shape, np.int32)
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


@dataclass
class FrameParticles:
    """One frame's instances and their measurements (px)."""

    labels: np.ndarray  # H x W int32 (uint16 when sent)
    table: np.ndarray  # (K, len(COLUMNS)) float64, rows in label order


def measure(labels: np.ndarray) -> np.ndarray:
    """Centroid, area, equivalent diameter and shape descriptors of each instance.

    Parameters
    ----------
    labels : numpy.ndarray
        H x W instance labels 1..K.

    Returns
    -------
    numpy.ndarray
        (K, 10) float64 in the order of :data:`COLUMNS`: label, row, col (px), area (px^2),
        equivalent diameter, major and minor axis lengths (px), eccentricity, solidity,
        orientation (rad).
    """
    if labels.max(initial=0) == 0:
        return np.zeros((0, len(COLUMNS)))
    props = regionprops_table(labels, properties=("label", "centroid", "area", "equivalent_diameter_area",
                                                  "axis_major_length", "axis_minor_length", "eccentricity",
                                                  "solidity", "orientation"))
    return np.column_stack([props["label"], props["centroid-0"], props["centroid-1"], props["area"],
                            props["equivalent_diameter_area"], props["axis_major_length"],
                            props["axis_minor_length"], props["eccentricity"], props["solidity"],
                            props["orientation"]]).astype(np.float64)


def bin_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` pixel blocks of every frame.

    Parameters
    ----------
    frames : numpy.ndarray
        (T, H, W) frames.
    factor : int
        Block side; 1 returns the frames unchanged.

    Returns
    -------
    numpy.ndarray
        float32 (T, H // factor, W // factor); edge rows and columns that do not fill a block are
        dropped.
    """
    if factor <= 1:
        return frames
    t, h, w = frames.shape
    hb, wb = h // factor, w // factor
    return frames[:, :hb * factor, :wb * factor].astype(np.float32).reshape(t, hb, factor, wb, factor).mean(
        axis=(2, 4))


def segment_frames(session: ort.InferenceSession, frames: np.ndarray, dark_particles: bool = True,
                   run_options: ort.RunOptions | None = None, batch: int = 4, binning: int = 1) -> list[FrameParticles]:
    """Instances and measurements of every frame of a chunk (see :func:`predict_maps`).

    Parameters
    ----------
    session, frames, dark_particles, run_options
        As for :func:`predict_maps`.
    batch : int
        Frames per model run.
    binning : int
        Segment frames binned ``binning`` x ``binning`` (the U-Net was trained on particles of
        radius 3-16 px: bin 4 brings particles of radius 12-64 px there); labels and
        measurements are returned at the full resolution.

    Returns
    -------
    list of FrameParticles
        One per frame: H x W labels and the :func:`measure` table.
    """
    out = []
    h, w = frames.shape[1:]
    for start in range(0, len(frames), batch):
        maps = predict_maps(session, bin_frames(frames[start:start + batch], binning), dark_particles, run_options)
        for m in maps:
            labels = instances(m, min_area=6 if binning <= 1 else 3)
            if binning > 1:
                labels = np.repeat(np.repeat(labels, binning, axis=0), binning, axis=1)
                labels = np.pad(labels, ((0, h - labels.shape[0]), (0, w - labels.shape[1])))
            out.append(FrameParticles(labels, measure(labels)))
    return out


@dataclass(frozen=True)
class BinningChoice:
    """The binning a movie is segmented at, and where it came from: ``"request"`` or ``"movie"``
    (chosen from its first frame); ``typical_radius_px``: the particles' typical radius in the
    full frame's px that the choice rests on (NaN when requested, or when no size held at two
    binnings and the frames run unbinned)."""

    binning: int
    source: str
    typical_radius_px: float = float("nan")


def typical_radius(labels: np.ndarray, largest: float = LARGEST_RADIUS) -> float:
    """The instances' typical equivalent radius: the median over their pixels of the radius of the
    instance each belongs to, so that specks of noise count by their few pixels.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels (0: background).
    largest : float
        Instances of a radius above this (px) are regions the U-Net did not split (a dense
        lattice), not particles, and are left out.

    Returns
    -------
    float
        The typical radius, px; 0 for no instances.
    """
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[(areas > 0) & (areas <= np.pi * largest**2)]
    if not len(areas):
        return 0.0
    radii = np.sqrt(areas / np.pi)
    order = np.argsort(radii)
    cumulative = np.cumsum(areas[order])
    return float(radii[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def choose_binning(session: ort.InferenceSession, frame: np.ndarray, dark_particles: bool = True,
                   run_options: ort.RunOptions | None = None, max_binning: int = 16) -> BinningChoice:
    """The binning at which the U-Net sees a frame's particles at the size it was trained on.

    Unbinned, the U-Net cuts particles larger than its range into pieces of a size it knows and
    counts the noise's specks; binned too far, it sees nothing. A size that belongs to the
    specimen reads the same (in the frame's px: binning x radius found) at neighbouring binnings,
    while pieces and specks shrink or grow with the binning. So the U-Net runs on the frame at
    each of :data:`BINNINGS` (about 1.5 times the work of the unbinned frame), and the smallest
    radius that two neighbouring binnings agree on within :data:`AGREE` (one of them seeing it
    within the U-Net's trained range; the binnings step by at least a third, so specks whose size
    follows the binning never agree) sets the binning that brings it to :data:`TARGET_RADIUS`.
    Larger agreed sizes are clusters and lattices seen whole. No agreement (noise, particles
    below the U-Net's range): unbinned.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The LPEM U-Net.
    frame : numpy.ndarray
        H x W frame (the movie's first).
    dark_particles, run_options
        As for :func:`predict_maps`.
    max_binning : int
        Largest binning considered (frames are also left at least :data:`MIN_BINNED_SIDE` px).

    Returns
    -------
    BinningChoice
    """
    top = min(max_binning, min(frame.shape) // MIN_BINNED_SIDE)
    sizes = []  # (binning, radius in the frame's px)
    for b in (b for b in BINNINGS if b <= max(top, 1)):
        maps = predict_maps(session, bin_frames(frame[None], b), dark_particles, run_options)[0]
        r = typical_radius(instances(maps, min_area=6 if b <= 1 else 3))
        sizes.append((b, b * r, TRAINED[0] <= r <= TRAINED[1]))
    agreed = [(r1 + r2) / 2 for (_, r1, in1), (_, r2, in2) in zip(sizes, sizes[1:], strict=False)
              if r1 > 0 and r2 > 0 and abs(np.log(r1 / r2)) <= np.log1p(AGREE) and (in1 or in2)]
    if not agreed:
        return BinningChoice(1, "movie")
    radius = min(agreed)
    return BinningChoice(int(np.clip(np.floor(radius / TARGET_RADIUS + 0.5), 1, max(top, 1))), "movie", radius)
