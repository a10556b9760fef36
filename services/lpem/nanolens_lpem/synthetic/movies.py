"""Seeded generator of liquid-cell TEM movies of moving, etching and assembling nanoparticles.

The generator is part of the product: it makes the training frames of the LPEM U-Net and the
movies on which segmentation, tracking and diffusion estimates are scored against exact ground
truth (no real liquid-phase movie with tracked ground truth is public).

Physical model, per frame (lengths in pixels, time in frames):

1. **Particles** live in a domain ``margin`` px larger than the field of view on every side, so
   they enter and leave the field; positions wrap around the domain's edges. Shapes: spheres
   (discs in projection), rods (capsules of aspect ratio ``rod_aspect``) and prisms (equilateral
   triangles), drawn with probabilities ``shape_mix``. Radii (px; for rods the half width, for
   prisms the circumradius) are uniform in ``radius_range``.
2. **Brownian motion.** Each step adds ``sqrt(2 D) * N(0, 1)`` per axis (``D`` in px^2/frame)
   to every free particle: the 2D mean squared displacement is ``4 D t``. Rods and prisms
   also turn (rotational steps ``N(0, rot_sigma)`` rad).
3. **Interactions.** A pair force of magnitude ``interaction * exp(-(s - contact) / range)``
   along the line of centres (``s``: centre distance, ``contact``: the sum of radii;
   ``interaction > 0`` attracts, ``< 0`` repels), applied as a drift ``D * F`` per step.
4. **Assembly.** With ``stick_probability`` per frame of contact, two touching particles bind:
   a cluster moves as one body with ``D / n`` (n: its members), so clusters grow as chains and
   compact groups.
5. **Etching.** Every radius shrinks by ``etch_rate`` px/frame; a particle below ``min_radius``
   dissolves (its track ends).
6. **Image.** Projected thickness (a sphere's chord profile, flat rods and prisms) attenuates
   the beam: ``I = B (1 - contrast * t)``. The background ``B`` drifts: a linear gradient whose
   direction turns slowly and a global level fluctuating by ``background_fluctuation``. Then a
   Gaussian blur (``blur_sigma``) and Poisson counting noise at ``dose`` electrons per pixel.

Ground truth per frame: an instance label image whose values are track ids (1-based, the
particle's identity while it stays in the domain; one that wraps around the domain's edge comes
back as a new particle with a new id), and a table of (frame, track id, row, col, radius,
shape). Everything is deterministic for a given ``seed`` (``numpy.random.default_rng``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = ["MovieParams", "Frame", "frames", "generate", "SHAPES"]

SHAPES = ("sphere", "rod", "prism")


@dataclass(frozen=True)
class MovieParams:
    """Parameters of a synthetic movie (px, frames, electrons)."""

    shape: tuple[int, int] = (128, 128)
    n_frames: int = 50
    n_particles: int = 12
    radius_range: tuple[float, float] = (4.0, 8.0)
    shape_mix: tuple[float, float, float] = (0.6, 0.2, 0.2)
    rod_aspect: float = 2.5
    diffusion: float = 1.0  # px^2 / frame
    rot_sigma: float = 0.05
    interaction: float = 0.0
    interaction_range: float = 4.0
    stick_probability: float = 0.0
    etch_rate: float = 0.0
    min_radius: float = 2.0
    margin: int = 16
    contrast: float = 0.3
    dose: float = 50.0  # electrons per pixel of the background
    blur_sigma: float = 1.0
    background_gradient: float = 0.2
    background_fluctuation: float = 0.05
    min_separation: float = 1.0  # initial gap between particles (px)
    extra: dict = field(default_factory=dict)


@dataclass
class Frame:
    """One rendered frame and its ground truth."""

    index: int
    image: np.ndarray  # H x W float32 counts
    labels: np.ndarray  # H x W int32 track ids (0: liquid)
    tracks: np.ndarray  # (K,) track ids in the field of view
    positions: np.ndarray  # (K, 2) row, col (px, field-of-view coordinates)
    radii: np.ndarray  # (K,)
    shapes: np.ndarray  # (K,) indices into SHAPES


def _place(rng, n, dom, radii, gap):
    pos = np.zeros((n, 2))
    for i in range(n):
        for _ in range(200):
            p = rng.uniform(0, dom)
            if i == 0 or np.all(np.hypot(*(pos[:i] - p).T) > radii[:i] + radii[i] + gap):
                break
        pos[i] = p
    return pos


def _thickness(shape: int, radius: float, angle: float, aspect: float, dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Projected thickness (0..1) of one particle on offsets (dr, dc) from its centre."""
    if shape == 0:  # sphere: chord profile
        rho2 = (dr**2 + dc**2) / radius**2
        return np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = dc * ca + dr * sa, -dc * sa + dr * ca
    if shape == 1:  # rod: capsule, half length (aspect - 1) * radius beyond the cap centres
        half = (aspect - 1.0) * radius
        du = np.clip(np.abs(u) - half, 0.0, None)
        rho2 = (du**2 + v**2) / radius**2
        return np.clip(1.3 * np.sqrt(np.clip(1.0 - rho2, 0.0, None)), 0.0, 1.0)
    inside = np.ones_like(u, dtype=bool)  # prism: equilateral triangle, circumradius ``radius``
    for k in range(3):
        a = angle + k * 2 * np.pi / 3
        inside &= (dc * np.cos(a) + dr * np.sin(a)) <= radius / 2
    return inside * 0.9


def frames(params: MovieParams, seed: int) -> Iterator[Frame]:
    """The movie frame by frame (memory independent of its length).

    Parameters
    ----------
    params : MovieParams
        What to simulate (px, frames, electrons per pixel).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same movie.

    Yields
    ------
    Frame
        Image (float32 counts), track-id labels and the ground-truth table of that frame.
    """
    rng = np.random.default_rng(seed)
    h, w = params.shape
    m = params.margin
    dom = np.array([h + 2 * m, w + 2 * m], float)
    n = params.n_particles
    radii = rng.uniform(*params.radius_range, n)
    shapes = rng.choice(3, size=n, p=np.asarray(params.shape_mix) / np.sum(params.shape_mix))
    extent = np.where(shapes == 1, radii * params.rod_aspect, radii)
    pos = _place(rng, n, dom, extent, params.min_separation)
    angles = rng.uniform(0, 2 * np.pi, n)
    alive = np.ones(n, bool)
    ids = np.arange(1, n + 1)  # track ids: a particle that wraps around the domain gets a new one
    next_id = n + 1
    cluster = np.arange(n)  # union-find roots (bound particles share a root)
    grad_angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for t in range(params.n_frames):
        if t:
            roots = np.array([_root(cluster, i) for i in range(n)])
            members = np.bincount(roots, weights=alive, minlength=n)
            step = rng.standard_normal((n, 2))
            drift = np.zeros((n, 2))
            if params.interaction:
                drift = _forces(pos, extent, alive, params) * params.diffusion
            for r in np.unique(roots[alive]):
                group = alive & (roots == r)
                k = max(members[r], 1.0)
                move = np.sqrt(2 * params.diffusion / k) * step[r] + drift[group].mean(axis=0)
                pos[group] += move
            wrapped = np.any((pos < 0) | (pos >= dom), axis=1) & alive
            pos %= dom
            for i in np.flatnonzero(wrapped):  # out at one side, in at the other: a new particle
                ids[i] = next_id
                next_id += 1
            angles += rng.normal(0, params.rot_sigma, n)
            if params.stick_probability:
                _stick(rng, pos, extent, alive, cluster, params.stick_probability, dom)
            radii = radii - params.etch_rate
            extent = np.where(shapes == 1, radii * params.rod_aspect, radii)
            alive &= radii >= params.min_radius
        grad_angle += rng.normal(0, 0.05)
        level = 1.0 + params.background_fluctuation * rng.standard_normal()
        g = params.background_gradient
        background = level * (1.0 + g * ((rows / h - 0.5) * np.sin(grad_angle) + (cols / w - 0.5) * np.cos(grad_angle)))
        thick = np.zeros((h, w), np.float32)
        labels = np.zeros((h, w), np.int32)
        best = np.zeros((h, w), np.float32)
        view = pos - m
        for i in np.flatnonzero(alive):
            reach = extent[i] + 2
            r0, c0 = view[i]
            lo_r, hi_r = int(max(np.floor(r0 - reach), 0)), int(min(np.ceil(r0 + reach) + 1, h))
            lo_c, hi_c = int(max(np.floor(c0 - reach), 0)), int(min(np.ceil(c0 + reach) + 1, w))
            if lo_r >= hi_r or lo_c >= hi_c:
                continue
            dr = rows[lo_r:hi_r, lo_c:hi_c] - r0
            dc = cols[lo_r:hi_r, lo_c:hi_c] - c0
            tk = _thickness(int(shapes[i]), float(radii[i]), float(angles[i]), params.rod_aspect, dr, dc)
            if not (tk > 0).any():
                continue
            sub = (slice(lo_r, hi_r), slice(lo_c, hi_c))
            thick[sub] = np.minimum(thick[sub] + tk, 1.5)
            win = (tk > 0) & (tk > best[sub])
            labels[sub][win] = ids[i]
            best[sub] = np.maximum(best[sub], tk)
        present = set(np.unique(labels).tolist())
        visible = [i for i in np.flatnonzero(alive) if ids[i] in present]
        image = background * (1.0 - params.contrast * thick)
        if params.blur_sigma > 0:
            image = ndi.gaussian_filter(image, params.blur_sigma)
        image = rng.poisson(np.clip(image, 0, None) * params.dose).astype(np.float32)
        vis = np.array(visible, int)
        yield Frame(t, image, labels, ids[vis].copy(), view[vis].copy(), radii[vis].copy(), shapes[vis].copy())


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return int(i)


def _forces(pos, extent, alive, params) -> np.ndarray:
    idx = np.flatnonzero(alive)
    force = np.zeros_like(pos)
    if idx.size < 2:
        return force
    d = pos[idx, None, :] - pos[None, idx, :]
    s = np.hypot(d[..., 0], d[..., 1]) + np.eye(idx.size)
    contact = extent[idx, None] + extent[None, idx]
    mag = params.interaction * np.exp(-np.clip(s - contact, 0, None) / params.interaction_range)
    np.fill_diagonal(mag, 0.0)
    mag[s - contact > 5 * params.interaction_range] = 0.0
    force[idx] = -(mag[..., None] * d / s[..., None]).sum(axis=1)  # attraction pulls towards the others
    return np.clip(force, -1.0, 1.0)


def _stick(rng, pos, extent, alive, parent, p, dom) -> None:
    idx = np.flatnonzero(alive)
    for a_i, a in enumerate(idx):
        for b in idx[a_i + 1:]:
            if np.hypot(*(pos[a] - pos[b])) <= extent[a] + extent[b] + 0.5 and rng.random() < p:
                ra, rb = _root(parent, a), _root(parent, b)
                if ra != rb:
                    parent[rb] = ra


def generate(params: MovieParams, seed: int) -> tuple[np.ndarray, np.ndarray, list[Frame]]:
    """The whole movie in memory: (T x H x W float32 images, T x H x W int32 labels, frames).

    Parameters
    ----------
    params : MovieParams
        What to simulate.
    seed : int
        Generator seed.

    Returns
    -------
    images : numpy.ndarray
        T x H x W float32 counts.
    labels : numpy.ndarray
        T x H x W int32 track ids (0: liquid).
    truth : list of Frame
        Per-frame ground truth (the ``image`` and ``labels`` of each are the same arrays).
    """
    out = list(frames(params, seed))
    return np.stack([f.image for f in out]), np.stack([f.labels for f in out]), out
