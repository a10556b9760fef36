"""Seeded generator of synthetic TEM images of agglomerated spherical primary particles.

The generator is part of the product: it makes the training data for the learned methods (the
reference, Frei & Kruis 2018, trained on synthetic images because labelled real agglomerates do
not exist in quantity) and the held-out data on which every method is scored against exact
ground truth.

Physical model, in order (all lengths in pixels):

1. **Primary particles.** Diameters are drawn from a log-normal distribution with geometric mean
   diameter ``gmd`` and geometric standard deviation ``gsd`` (``ln d ~ N(ln gmd, ln gsd)``),
   truncated to ``[d_min, d_max]``.
2. **Aggregation.** Each agglomerate is built in 3D by hierarchical *ballistic cluster-cluster
   aggregation* (BCCA: clusters of similar size collide along straight random trajectories and
   stick where they first touch; fractal dimension about 1.9, like flame soot) or by *ballistic
   particle-cluster aggregation* (BPCA: monomers hit a growing cluster; denser, about 3).
   After each contact the two touching spheres are pulled together so that their centre distance
   is ``(r_i + r_j) * (1 - overlap)`` with ``overlap`` drawn per contact from
   ``overlap_range``; this models sintering necks / partial coalescence.
3. **Projection.** Orthographic projection along z. The projected thickness of a sphere of radius
   ``r`` at in-plane distance ``rho`` from its centre is modelled as
   ``t = 2 r (1 - rho^2/r^2)^(flatness/2)``: ``flatness = 1`` is the exact chord of a solid
   sphere, smaller values give the flatter profile of graphitic shells seen in carbon black.
   Thicknesses of overlapping particles add.
4. **Contrast.** Beer-Lambert-like mass-thickness contrast: transmission ``exp(-mu t)`` with
   ``mu = absorption / gmd``, so a particle of the median size transmits ``exp(-absorption)``
   at its centre whatever the magnification.
5. **Background.** Illumination with a linear gradient and a smooth random low-frequency field
   (uneven illumination, support film thickness) times fine-grained amorphous-film texture
   (Gaussian-filtered white noise, correlation length ``film_grain`` px).
6. **Optics and detector.** Gaussian point-spread function (``psf_sigma`` px), Poisson counting
   noise at ``dose`` electrons per background pixel, then a small detector blur; scaled to
   ``uint8`` with the background near ``background_level``.
7. **Scale bar** (optional): a dark bar with a light frame in the lower right corner, excluded
   from the ground truth.

Ground truth per image (:class:`SyntheticImage`): each primary particle's diameter (px), 3D
centre (row, col, depth; px), agglomerate id, an instance label image, and the agglomerate label
image. Where particles overlap, a pixel belongs to the one in whose projected disc it lies deepest
relative to the radius (``overlaps="deepest"``). Because thicknesses add, the image does not show
which particle is in front, and a label image by depth order (``"front"``, the rule up to
``tem-unet`` 1.1.0) gave about half of the particles of a dense agglomerate a mask that the image
does not determine.

Everything is deterministic for a given ``seed`` (``numpy.random.default_rng``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "SynthParams",
    "SyntheticImage",
    "sample_diameters",
    "aggregate",
    "render",
    "expose",
    "generate",
    "generate_batch",
]


@dataclass(frozen=True)
class SynthParams:
    """Parameters of :func:`generate`. Lengths in pixels, intensities in uint8 grey levels.

    ``gmd`` and ``gsd`` may each be a scalar or a ``(low, high)`` range from which one value is
    drawn per image (uniformly; for ``gmd`` log-uniformly). ``particles_per_agglomerate`` is a
    ``(low, high)`` range sampled log-uniformly per agglomerate. ``coverage`` is the target
    fraction of the image covered by agglomerates (placement stops when reached or after
    ``max_agglomerates``). ``overlaps`` is the labelling rule of :func:`render`.
    """

    shape: tuple[int, int] = (256, 256)
    gmd: float | tuple[float, float] = 24.0
    gsd: float | tuple[float, float] = 1.25
    d_min: float = 6.0
    d_max: float = 120.0
    particles_per_agglomerate: tuple[int, int] = (1, 40)
    coverage: float = 0.18
    max_agglomerates: int = 12
    aggregation: str = "bcca"
    overlap_range: tuple[float, float] = (0.0, 0.25)
    flatness: float = 0.5
    absorption: float | tuple[float, float] = (0.25, 0.55)
    background_level: float = 168.0
    gradient: float = 0.06
    low_freq: float = 0.03
    film_texture: float = 0.035
    film_grain: float = 1.3
    psf_sigma: float = 1.0
    dose: float = 400.0
    detector_sigma: float = 0.6
    margin: int = 2
    scale_bar: bool = False
    overlaps: str = "deepest"


@dataclass
class SyntheticImage:
    """One synthetic image with its ground truth.

    Attributes
    ----------
    image : (H, W) uint8
        The TEM image (dark particles on a bright background).
    labels : (H, W) int32
        Instance labels: 0 background, ``k`` the particle with index ``k - 1`` (overlaps by
        ``params.overlaps``, see :func:`render`).
    agglomerate_labels : (H, W) int32
        0 background, ``a + 1`` for agglomerate ``a``.
    diameters : (N,) float
        True primary-particle diameters in px (including particles hidden behind others).
    centres : (N, 3) float
        Particle centres (row, col, depth) in px; depth grows away from the electron source.
    agglomerate_ids : (N,) int
        Agglomerate index of each particle.
    visible_area : (N,) int
        Number of pixels each particle owns in ``labels`` (0 only when hidden by the ``"front"``
        rule or off the image).
    scale_bar_mask : (H, W) bool
        Pixels of the scale bar (all False without one).
    params : SynthParams
        The parameters with per-image ranges resolved to the values used.
    seed : int
    """

    image: np.ndarray
    labels: np.ndarray
    agglomerate_labels: np.ndarray
    diameters: np.ndarray
    centres: np.ndarray
    agglomerate_ids: np.ndarray
    visible_area: np.ndarray
    scale_bar_mask: np.ndarray
    params: SynthParams
    seed: int = 0
    extra: dict = field(default_factory=dict)


def sample_diameters(rng: np.random.Generator, n: int, gmd: float, gsd: float,
                     d_min: float = 0.0, d_max: float = np.inf) -> np.ndarray:
    """Draw ``n`` log-normal diameters (px) with geometric mean ``gmd`` and GSD ``gsd``.

    Values outside ``[d_min, d_max]`` are redrawn (truncated log-normal).
    """
    out = np.empty(0)
    while out.size < n:
        d = np.exp(rng.normal(np.log(gmd), np.log(max(gsd, 1.0 + 1e-9)), size=2 * n + 4))
        out = np.concatenate([out, d[(d >= d_min) & (d <= d_max)]])
    return out[:n]


def _random_unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    v = rng.normal(size=(3,) if n is None else (n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _collide(rng: np.random.Generator, pa: np.ndarray, ra: np.ndarray, pb: np.ndarray,
             rb: np.ndarray, overlap: float) -> np.ndarray:
    """Shoot cluster B (centres ``pb``, radii ``rb``) at cluster A along a random line.

    Returns B's new centres: translated to first contact, then pulled towards the touched
    particle so that the contact distance shrinks by the factor ``1 - overlap``.
    """
    ca, cb = pa.mean(0), pb.mean(0)
    pa, pb = pa - ca, pb - cb
    reach = np.linalg.norm(pa, axis=1).max() + ra.max() + np.linalg.norm(pb, axis=1).max() + rb.max()
    s = ra[:, None] + rb[None, :]
    for _ in range(200):
        u = _random_unit(rng)
        # offset in the plane perpendicular to u, uniform in a disc that can reach A
        e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        rad = reach * np.sqrt(rng.random())
        phi = rng.random() * 2 * np.pi
        start = -2.0 * reach * u + rad * (np.cos(phi) * e1 + np.sin(phi) * e2)
        d = (pb + start)[None, :, :] - pa[:, None, :]            # (na, nb, 3)
        du = d @ u
        disc = du**2 - (d**2).sum(-1) + s**2
        ok = disc >= 0
        if not ok.any():
            continue
        t = np.where(ok, -du - np.sqrt(np.where(ok, disc, 0.0)), np.inf)
        i, j = np.unravel_index(np.argmin(t), t.shape)
        new = pb + start + t[i, j] * u
        if overlap > 0:
            v = pa[i] - new[j]
            new = new + v / np.linalg.norm(v) * s[i, j] * overlap
        return new + ca
    raise RuntimeError("ballistic collision failed to find a trajectory")  # pragma: no cover


def aggregate(rng: np.random.Generator, radii: np.ndarray, method: str = "bcca",
              overlap_range: tuple[float, float] = (0.0, 0.2)) -> np.ndarray:
    """Build one 3D agglomerate from spheres of the given radii (px).

    Parameters
    ----------
    rng : numpy Generator
    radii : (N,) float
        Sphere radii in px.
    method : {"bcca", "bpca"}
        Ballistic cluster-cluster (fractal dimension about 1.9) or particle-cluster aggregation
        (about 3).
    overlap_range : (lo, hi)
        Each contact's overlap fraction is uniform in this range: centre distance
        ``(r_i + r_j)(1 - overlap)``.

    Returns
    -------
    (N, 3) float
        Centres in px, centred on the centre of mass of the positions.
    """
    n = len(radii)
    if n == 0:
        return np.zeros((0, 3))
    idx = rng.permutation(n)
    clusters = [(np.zeros((1, 3)), np.array([radii[i]]), [i]) for i in idx]
    if method == "bpca":
        pa, ra, ia = clusters[0]
        for pb, rb, ib in clusters[1:]:
            pa = np.vstack([pa, _collide(rng, pa, ra, pb, rb, rng.uniform(*overlap_range))])
            ra = np.concatenate([ra, rb])
            ia = ia + ib
        clusters = [(pa, ra, ia)]
    elif method == "bcca":
        while len(clusters) > 1:
            order = rng.permutation(len(clusters))
            clusters = [clusters[k] for k in order]
            clusters.sort(key=lambda c: len(c[2]))       # pair clusters of similar size
            merged = []
            for k in range(0, len(clusters) - 1, 2):
                (pa, ra, ia), (pb, rb, ib) = clusters[k], clusters[k + 1]
                pb = (pb - pb.mean(0)) @ _random_rotation(rng).T
                pb = _collide(rng, pa, ra, pb, rb, rng.uniform(*overlap_range))
                merged.append((np.vstack([pa, pb]), np.concatenate([ra, rb]), ia + ib))
            if len(clusters) % 2:
                merged.append(clusters[-1])
            clusters = merged
    else:
        raise ValueError(f"unknown aggregation method {method!r}; use 'bcca' or 'bpca'")
    p, _, order = clusters[0]
    out = np.empty((n, 3))
    out[np.asarray(order)] = p
    return out - out.mean(0)


#: rules that give a pixel covered by several particles to one of them (see :func:`render`)
OVERLAP_RULES = ("deepest", "front")


def render(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray, *,
           flatness: float = 0.5, overlaps: str = "deepest") -> tuple[np.ndarray, np.ndarray]:
    """Project spheres onto the image plane.

    Parameters
    ----------
    shape : (H, W)
    centres : (N, 3) float
        (row, col, depth) in px.
    radii : (N,) float
        Radii in px.
    flatness : float
        Exponent of the thickness profile, see the module docstring (1 = solid sphere).
    overlaps : {"deepest", "front"}
        Which particle a pixel covered by several belongs to. ``"deepest"``: the one in whose
        projected disc it lies deepest relative to the radius (smallest ``rho / r``), so every
        particle owns its centre and the boundary between two overlapping particles is where
        their normalised distances meet. ``"front"``: the one nearest the electron source (the
        rule of ``tem-unet`` 1.0.0 and 1.1.0). Thicknesses add, so the image is the same whichever
        particle is in front: only ``"deepest"`` is determined by the image.

    Returns
    -------
    thickness : (H, W) float
        Summed projected thickness in px.
    labels : (H, W) int32
        ``k`` for the particle ``k - 1`` that owns the pixel (pixel centres inside the projected
        circle), 0 elsewhere.
    """
    if overlaps not in OVERLAP_RULES:
        raise ValueError(f"overlaps must be one of {OVERLAP_RULES}, got {overlaps!r}")
    h, w = shape
    thick = np.zeros(shape)
    best = np.full(shape, np.inf)   # the owner's key: entry depth, or rho^2 / r^2
    labels = np.zeros(shape, np.int32)
    for k, ((cy, cx, cz), r) in enumerate(zip(centres, radii, strict=True)):
        y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
        x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        q = 1.0 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        inside = q > 0
        qc = np.clip(q, 0.0, None)
        thick[y0:y1, x0:x1] += 2.0 * r * qc ** (flatness / 2.0)
        key = np.where(inside, cz - r * np.sqrt(qc) if overlaps == "front" else 1.0 - q, np.inf)
        win = key < best[y0:y1, x0:x1]
        best[y0:y1, x0:x1] = np.where(win, key, best[y0:y1, x0:x1])
        labels[y0:y1, x0:x1] = np.where(win, k + 1, labels[y0:y1, x0:x1])
    return thick, labels


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return f / (f.std() + 1e-12)


def _background(rng: np.random.Generator, shape: tuple[int, int], p: SynthParams) -> np.ndarray:
    """Relative illumination x film transmission (mean about 1)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    ang = rng.random() * 2 * np.pi
    grad = 1.0 + p.gradient * rng.random() * ((np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) * 2)
    low = 1.0 + p.low_freq * _smooth_field(rng, shape, max(h, w) / 6)
    film = 1.0 + p.film_texture * _smooth_field(rng, shape, p.film_grain)
    return grad * low * film


def _draw_scale_bar(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    bw, bh = max(w // 6, 8), max(h // 60, 3)
    y1, x1 = h - max(h // 25, 4), w - max(w // 25, 4)
    mask = np.zeros(image.shape, bool)
    mask[y1 - bh - 2:y1 + 2, x1 - bw - 2:x1 + 2] = True
    image[mask] = 235
    image[y1 - bh:y1, x1 - bw:x1] = 15
    return mask


def resolve(rng: np.random.Generator, value, log: bool = False) -> float:
    if np.isscalar(value):
        return float(value)
    lo, hi = value
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if log else float(rng.uniform(lo, hi))


def _place_agglomerates(rng: np.random.Generator, p: SynthParams, gmd: float, gsd: float):
    """Aggregate and place agglomerates without overlap inside the image (with a margin)."""
    h, w = p.shape
    occupied = np.zeros(p.shape, bool)
    all_c, all_r, all_a = [], [], []
    lo, hi = p.particles_per_agglomerate
    for _ in range(p.max_agglomerates):
        if occupied.mean() >= p.coverage:
            break
        n = int(np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)))))
        n = int(np.clip(n, lo, hi))
        r = sample_diameters(rng, n, gmd, gsd, p.d_min, p.d_max) / 2.0
        c = aggregate(rng, r, p.aggregation, p.overlap_range) @ _random_rotation(rng).T
        for _ in range(20):   # shrink agglomerates that cannot fit
            ext_lo = (c[:, :2] - r[:, None]).min(0)
            ext_hi = (c[:, :2] + r[:, None]).max(0)
            size = ext_hi - ext_lo
            if size[0] < h - 2 * p.margin - 2 and size[1] < w - 2 * p.margin - 2:
                break
            keep = np.argsort(np.linalg.norm(c[:, :2] - c[:, :2].mean(0), axis=1))[: max(1, len(r) * 3 // 4)]
            c, r = c[keep], r[keep]
        placed = False
        for _ in range(30):
            oy = rng.uniform(p.margin - ext_lo[0], h - p.margin - ext_hi[0] - 1)
            ox = rng.uniform(p.margin - ext_lo[1], w - p.margin - ext_hi[1] - 1)
            cc = c + np.array([oy, ox, 0.0])
            _, lab = render(p.shape, cc, r, flatness=1.0)
            foot = lab > 0
            if not (ndi.binary_dilation(foot, iterations=3) & occupied).any():
                placed = True
                break
        if not placed:
            continue
        occupied |= foot
        all_c.append(cc)
        all_r.append(r)
        all_a.append(np.full(len(r), len(all_a)))
    if not all_c:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, int)
    return np.vstack(all_c), np.concatenate(all_r), np.concatenate(all_a)


def expose(rng: np.random.Generator, p: SynthParams, optical_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 4-7 of the module docstring: ``(uint8 image, scale-bar mask)`` of a specimen whose
    transmission is ``exp(-optical_depth)``, on the background, optics and detector of ``p``."""
    clean = _background(rng, p.shape, p) * np.exp(-optical_depth)
    clean = ndi.gaussian_filter(clean, p.psf_sigma) if p.psf_sigma > 0 else clean
    counts = rng.poisson(np.clip(clean, 0, None) * p.dose).astype(float)
    img = counts / p.dose
    if p.detector_sigma > 0:
        img = ndi.gaussian_filter(img, p.detector_sigma)
    image = np.clip(np.rint(img * p.background_level), 0, 255).astype(np.uint8)
    bar = _draw_scale_bar(image) if p.scale_bar else np.zeros(p.shape, bool)
    return image, bar


def generate(seed: int, params: SynthParams | None = None) -> SyntheticImage:
    """Generate one synthetic TEM image with ground truth (deterministic in ``seed``)."""
    p = params or SynthParams()
    rng = np.random.default_rng(seed)
    gmd = resolve(rng, p.gmd, log=True)
    gsd = resolve(rng, p.gsd)
    absorption = resolve(rng, p.absorption)
    centres, radii, agg = _place_agglomerates(rng, p, gmd, gsd)
    thick, labels = render(p.shape, centres, radii, flatness=p.flatness, overlaps=p.overlaps)
    image, bar = expose(rng, p, optical_depth=thick * (absorption / gmd))
    labels = np.where(bar, 0, labels)
    n = len(radii)
    visible = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    agg_lut = np.concatenate([[0], agg + 1]).astype(np.int32)
    return SyntheticImage(
        image=image, labels=labels.astype(np.int32), agglomerate_labels=agg_lut[labels],
        diameters=2.0 * radii, centres=centres, agglomerate_ids=agg.astype(int),
        visible_area=visible, scale_bar_mask=bar,
        params=replace(p, gmd=gmd, gsd=gsd, absorption=absorption), seed=seed,
    )


def generate_batch(seeds, params: SynthParams | None = None) -> list[SyntheticImage]:
    """:func:`generate` for each seed."""
    return [generate(int(s), params) for s in seeds]
