"""Seeded generator of synthetic TEM images of faceted nanocrystals packed on a support film.

The agglomerate generator (:mod:`nanolens_tem.synthetic.agglomerates`) makes spheres; colloidal metal
nanocrystals (gold tetrahedra, triangular nanoprisms, hexagonal plates) are faceted and lie in
dense monolayers with thin gaps between neighbours. A network trained on spheres alone over-splits
them (see ``docs/tem.md``), so this generator gives the CNN the second kind of specimen.

Physical model (lengths in px), sharing steps 4-7 (background, optics, counting noise, scale bar)
with :func:`nanolens_tem.synthetic.agglomerates.expose`:

1. **Shapes.** Each particle is a regular triangle, a regular hexagon or a disc, with corners
   rounded by a radius that is a fraction ``rounding`` of the apothem, at a random in-plane angle.
   Its size is its equivalent-circle diameter (the diameter of the disc of equal area, the
   quantity reported for real masks), log-normal with ``gmd``, ``gsd`` as in the agglomerate
   generator; the shape's apothem follows analytically from that area.
2. **Packing.** Random sequential adsorption: particles are dropped at uniform random positions
   (centres may lie up to a third of a diameter outside the frame, as in a crop of a larger
   field) and kept if they stay at least a per-particle gap (a fraction ``gap`` of the diameter)
   away from those already placed. A particle that lands on others is kept instead while fewer
   than a fraction ``overlap_fraction`` of the particles overlap (crystals lying on top of each
   other) and it covers less than half of its area. A fraction ``attraction`` of the particles
   that fit then slide straight towards the nearest placed one until their gap closes (packed
   monolayers, as on the real films). Dropping stops at the target ``coverage`` or after
   ``max_attempts`` misses in a row. A negative ``gap`` lets neighbours overlap by a thin strip
   (the lens-shaped overlaps between touching tetrahedra). With probability ``lattice_fraction``
   an image is instead a row superlattice of triangles pointing alternately up and down (the
   ordered monolayers of tetrahedra): candidates sit on that lattice, with jitter and vacancies,
   and each one is kept under the same overlap rules.
3. **Thickness and contrast.** A particle's projected thickness rises from a fraction
   ``edge_thickness`` of its plateau at the outline over a ramp (a fraction of the apothem: large
   is a tetrahedron seen down an axis, small a flat plate) to the plateau; its optical depth at
   the plateau is ``absorption`` times a per-particle log-normal factor (``contrast_spread``), the
   diffraction contrast that makes some crystals of one batch far darker than others. A fraction
   ``bend_contours`` of the crystals also carry a dark band across them (a bend contour: a
   straight band through a random point of the crystal, width 5-25 % of the apothem, optical
   depth raised by 20-100 %), so that a dark stripe inside a crystal is not taken for the overlap
   of two. Optical depths of overlapping particles add.

Ground truth as for agglomerates (:class:`~nanolens_tem.synthetic.agglomerates.SyntheticImage`): diameters are
equivalent-circle diameters of the whole particle (hidden parts included), centres are
``(row, col, depth)`` with a random depth order that decides who is in front, every particle is
its own agglomerate, and ``extra["shape"] == "faceted"`` tells the training targets to use the
outline distance instead of the sphere's radial one. ``extra["overlap"]`` marks the pixels that
two or more crystals cover; the masks of real crystal images leave them out of every instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from nanolens_tem.synthetic.agglomerates import SyntheticImage, SynthParams, expose, resolve, sample_diameters

__all__ = ["FacetedParams", "SHAPES", "shape_distance", "generate_faceted"]

SHAPES = {"triangle": 3, "hexagon": 6, "disc": 0}


@dataclass(frozen=True)
class FacetedParams:
    """Parameters of :func:`generate_faceted`. Ranges ``(low, high)`` are drawn once per image
    (``gmd`` log-uniformly) or, for the per-particle ones (``rounding``, ``ramp``,
    ``edge_thickness``, ``gap``), once per particle. ``optics`` supplies background, optics and detector (its particle
    fields are not used)."""

    shape: tuple[int, int] = (256, 256)
    gmd: float | tuple[float, float] = 30.0
    gsd: float | tuple[float, float] = 1.12
    d_min: float = 6.0
    d_max: float = 150.0
    shape_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)   # triangle, hexagon, disc
    rounding: tuple[float, float] = (0.05, 0.35)
    ramp: tuple[float, float] = (0.05, 0.6)
    edge_thickness: tuple[float, float] = (0.2, 0.6)
    coverage: float | tuple[float, float] = (0.3, 0.7)
    gap: tuple[float, float] = (0.01, 0.08)
    overlap_fraction: float = 0.08
    lattice_fraction: float = 0.0
    bend_contours: float = 0.0
    attraction: float = 0.85
    absorption: float | tuple[float, float] = (0.4, 1.1)
    contrast_spread: float = 0.35
    max_attempts: int = 200
    optics: SynthParams = field(default_factory=lambda: SynthParams(psf_sigma=1.2, dose=600.0))

    def __post_init__(self):
        def span(name, lo=0.0, hi=np.inf):
            v = getattr(self, name)
            vals = (v,) if np.isscalar(v) else tuple(v)
            if len(vals) not in (1, 2) or not all(lo <= x <= hi for x in vals) or vals[0] > vals[-1]:
                raise ValueError(f"FacetedParams.{name} = {v!r}: expected a value or a (low, high) range in "
                                 f"[{lo}, {hi}]")
        if len(self.shape) != 2 or min(self.shape) < 16:
            raise ValueError(f"FacetedParams.shape = {self.shape!r}: expected (height, width), each >= 16 px")
        for name in ("gmd", "d_min", "d_max", "absorption", "contrast_spread"):
            span(name)
        span("gsd", 1.0)
        for name in ("rounding", "ramp", "edge_thickness", "overlap_fraction", "attraction", "lattice_fraction",
                     "bend_contours"):
            span(name, 0.0, 1.0)
        span("gap", -0.3, 1.0)
        span("coverage", 0.0, 0.95)
        w = np.asarray(self.shape_weights, float)
        if w.shape != (len(SHAPES),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"FacetedParams.shape_weights = {self.shape_weights!r}: expected "
                             f"{len(SHAPES)} non-negative weights ({', '.join(SHAPES)}) with a positive sum")


def _apothem(n_sides: int, area: float, rounding: float) -> float:
    """Outer apothem ``a`` of a regular ``n``-gon whose corners are rounded with radius
    ``rounding * a`` and whose area is ``area`` (``n = 0``: a disc, ``a`` its radius)."""
    if n_sides == 0:
        return float(np.sqrt(area / np.pi))
    k = n_sides * np.tan(np.pi / n_sides)
    inner = 1.0 - rounding
    # area = k a'^2 + perimeter(a') rc + pi rc^2 with a' = inner a, rc = rounding a
    return float(np.sqrt(area / (k * inner**2 + 2 * k * inner * rounding + np.pi * rounding**2)))


def shape_distance(yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], n_sides: int,
                   apothem: float, rounding: float, angle: float) -> np.ndarray:
    """Signed distance (px, negative inside) from the outline of a rounded regular polygon.

    Exact: the rounded polygon is the set of points within ``rc = rounding * apothem`` of the
    inner polygon of apothem ``apothem - rc``, so the distance is the inner polygon's signed
    distance minus ``rc``."""
    dy, dx = yy - centre[0], xx - centre[1]
    if n_sides == 0:
        return np.hypot(dy, dx) - apothem
    rc = rounding * apothem
    inner = apothem - rc
    phis = angle + 2 * np.pi * np.arange(n_sides) / n_sides
    normals = np.stack([np.sin(phis), np.cos(phis)], 1)                # (n, [y, x])
    proj = dy[..., None] * normals[:, 0] + dx[..., None] * normals[:, 1]
    outside_edge = proj - inner                                          # > 0: beyond that edge's line
    d_inside = outside_edge.max(-1)
    # outside: distance to the nearest edge segment of the inner polygon
    half = inner * np.tan(np.pi / n_sides)
    tang = np.stack([-normals[:, 1], normals[:, 0]], 1)
    along = dy[..., None] * tang[:, 0] + dx[..., None] * tang[:, 1]
    along = np.clip(along, -half, half)
    seg_y = normals[:, 0] * inner + tang[:, 0] * along
    seg_x = normals[:, 1] * inner + tang[:, 1] * along
    d_out = np.hypot(dy[..., None] - seg_y, dx[..., None] - seg_x).min(-1)
    return np.where(d_inside <= 0, d_inside, d_out) - rc


def _footprint(shape, cy, cx, n_sides, a, rounding, angle, reach, margin):
    """``(window slices, signed distance in the window)`` of one particle, or None if the
    particle and its margin miss the frame."""
    h, w = shape
    y0, y1 = max(int(cy - reach - margin) - 1, 0), min(int(cy + reach + margin) + 2, h)
    x0, x1 = max(int(cx - reach - margin) - 1, 0), min(int(cx + reach + margin) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    return (slice(y0, y1), slice(x0, x1)), shape_distance(yy, xx, (cy, cx), n_sides, a, rounding, angle)


def _slide(shape, occupied, cy, cx, shape_of, win, sd):
    """Move a particle that fits straight towards the nearest occupied pixel, as far as it still
    keeps its gap (bisection on the distance travelled): particles on a film pack against their
    neighbours instead of staying where they landed."""
    _, idx = ndi.distance_transform_edt(~occupied, return_indices=True)
    iy, ix = int(np.clip(round(cy), 0, shape[0] - 1)), int(np.clip(round(cx), 0, shape[1] - 1))
    ty, tx = idx[0][iy, ix], idx[1][iy, ix]
    dist = float(np.hypot(ty - cy, tx - cx))
    if dist < 1:
        return cy, cx, win, sd
    uy, ux = (ty - cy) / dist, (tx - cx) / dist
    gap = shape_of[-1]
    lo, hi, best = 0.0, dist, (cy, cx, win, sd)
    for _ in range(7):
        t = (lo + hi) / 2
        fp = _footprint(shape, cy + t * uy, cx + t * ux, *shape_of)
        if fp is not None and (fp[1] <= 0).any() and not (occupied[fp[0]] & (fp[1] <= gap)).any():
            lo, best = t, (cy + t * uy, cx + t * ux, *fp)
        else:
            hi = t
    return best


def _lattice_sites(rng: np.random.Generator, shape: tuple[int, int], gmd: float,
                   gap: tuple[float, float]) -> list[tuple[float, float, float]]:
    """``(row, col, angle)`` of the sites of a row superlattice of triangles (equivalent-circle
    diameter ``gmd``) pointing alternately up and down along rows at a random angle, with
    positional and angular jitter, about a tenth of the sites vacant, in random order.
    Neighbours in a row face each other across a gap drawn from ``gap`` (a fraction of ``gmd``,
    negative: overlapping); rows are separated by a bright gap and slide against each other, as
    in ordered monolayers of tetrahedra."""
    side = gmd * np.sqrt(np.pi / np.sqrt(3))                   # a triangle of area pi gmd^2 / 4
    height = side * np.sqrt(3) / 2
    pitch = height * (1 + rng.uniform(0.02, 0.15))             # row to row
    # moving a neighbour by s along the row opens the gap between facing edges by s sin 60
    step = side / 2 + rng.uniform(*gap) * gmd / np.sin(np.pi / 3)
    theta = rng.uniform(0, np.pi)
    along = np.array([np.sin(theta), np.cos(theta)])            # (row, col) unit vectors
    across = np.array([np.cos(theta), -np.sin(theta)])
    h, w = shape
    centre, reach = np.array([h / 2, w / 2]), np.hypot(h, w) / 2 + side
    sites = []
    for i in range(-int(reach / pitch) - 1, int(reach / pitch) + 2):
        shift = rng.uniform(0, 2 * step)
        for j in range(-int(reach / step) - 1, int(reach / step) + 2):
            up = j % 2 == 0
            # the centroid of an up triangle is a third of its height above the row's base line
            pos = centre + (j * step + shift) * along + (i * pitch + height * (1 / 3 if up else 2 / 3)) * across
            pos = pos + rng.normal(0, 0.03 * side, 2)
            angle = theta - np.pi / 2 if up else theta + np.pi / 2  # normal of the base edge
            if -gmd / 3 <= pos[0] <= h + gmd / 3 and -gmd / 3 <= pos[1] <= w + gmd / 3 and rng.random() > 0.1:
                sites.append((float(pos[0]), float(pos[1]), float(angle + rng.normal(0, 0.05))))
    return [sites[k] for k in rng.permutation(len(sites))]


def _bend_contour(rng: np.random.Generator, win, centre: tuple[float, float], apothem: float) -> np.ndarray:
    """Relative extra optical depth of a bend contour in the window ``win``: a straight dark band
    with a Gaussian profile through a random point within half an apothem of the centre."""
    yy, xx = np.mgrid[win]
    phi = rng.uniform(0, np.pi)
    oy, ox = centre + rng.uniform(-0.5, 0.5, 2) * apothem
    across = (yy - oy) * np.cos(phi) - (xx - ox) * np.sin(phi)
    width = rng.uniform(0.05, 0.25) * apothem
    return rng.uniform(0.2, 1.0) * np.exp(-0.5 * (across / max(width, 0.5)) ** 2)


def generate_faceted(seed: int, params: FacetedParams | None = None) -> SyntheticImage:
    """Generate one synthetic image of faceted nanocrystals with ground truth (deterministic in
    ``seed``)."""
    p = params or FacetedParams()
    rng = np.random.default_rng(seed)
    h, w = p.shape
    gmd = resolve(rng, p.gmd, log=True)
    gsd = resolve(rng, p.gsd)
    absorption = resolve(rng, p.absorption)
    coverage = resolve(rng, p.coverage)
    # drawn only when asked for, so that images without lattices stay as they were
    lattice = bool(p.lattice_fraction) and rng.random() < p.lattice_fraction
    sites = _lattice_sites(rng, p.shape, gmd, p.gap) if lattice else None
    weights = np.asarray(p.shape_weights, float) / sum(p.shape_weights)
    kinds = list(SHAPES.values())
    occupied = np.zeros(p.shape, bool)
    cover = np.zeros(p.shape, np.int16)
    optical_depth = np.zeros(p.shape)
    front = np.full(p.shape, np.inf)
    labels = np.zeros(p.shape, np.int32)
    diam, cent, attempts, n_overlapping = [], [], 0, 0
    # a lattice is placed site by site; random drops go on until the coverage or too many misses
    while sites if sites is not None else (occupied.mean() < coverage and attempts < p.max_attempts):
        d = float(sample_diameters(rng, 1, gmd, gsd, p.d_min, p.d_max)[0])
        if sites is not None:
            n_sides, rounding = 3, rng.uniform(*p.rounding)
            cy, cx, angle = sites.pop()
        else:
            n_sides = int(kinds[rng.choice(len(kinds), p=weights)])
            rounding = rng.uniform(*p.rounding)
            cy, cx = rng.uniform(-d / 3, h + d / 3), rng.uniform(-d / 3, w + d / 3)
            angle = rng.uniform(0, 2 * np.pi)
        a = _apothem(n_sides, np.pi * d * d / 4, rounding)
        reach = a / np.cos(np.pi / n_sides) if n_sides else a            # circumradius
        gap = rng.uniform(*p.gap) * d
        shape_of = (n_sides, a, rounding, angle, reach, gap)
        fp = _footprint(p.shape, cy, cx, *shape_of)
        if fp is None or not (fp[1] <= 0).any():
            attempts += 1
            continue
        win, sd = fp
        hidden = (occupied[win] & (sd <= 0)).sum() / (sd <= 0).sum()
        # lattice neighbours may overlap by a thin lens (tilted tetrahedra) without counting as
        # lying on top of each other
        thin_lens = sites is not None and hidden <= 0.15
        overlapping = not thin_lens and bool((occupied[win] & (sd <= gap)).any())
        if overlapping and (n_overlapping >= p.overlap_fraction * (len(diam) + 1) or hidden > 0.5):
            attempts += 1
            continue
        if not overlapping and diam and sites is None and rng.random() < p.attraction:
            cy, cx, win, sd = _slide(p.shape, occupied, cy, cx, shape_of, win, sd)
        attempts = 0
        n_overlapping += overlapping
        inside = sd <= 0
        k = len(diam)
        depth = rng.random()
        ramp = max(rng.uniform(*p.ramp) * a, 1.0)
        edge = rng.uniform(*p.edge_thickness)
        profile = np.where(inside, edge + (1 - edge) * np.clip(-sd / ramp, 0.0, 1.0), 0.0)
        if p.bend_contours and rng.random() < p.bend_contours:
            profile *= 1 + _bend_contour(rng, win, (cy, cx), a)
        optical_depth[win] += absorption * np.exp(rng.normal(0, p.contrast_spread)) * profile
        mine = inside & (depth < front[win])
        front[win] = np.where(mine, depth, front[win])
        labels[win] = np.where(mine, k + 1, labels[win])
        occupied[win] |= inside
        cover[win] += inside
        diam.append(d)
        cent.append((cy, cx, depth))
    optics = replace(p.optics, shape=p.shape)
    image, bar = expose(rng, optics, optical_depth)
    labels = np.where(bar, 0, labels)
    n = len(diam)
    visible = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return SyntheticImage(
        image=image, labels=labels, agglomerate_labels=labels.copy(), diameters=np.asarray(diam, float),
        centres=np.asarray(cent, float).reshape(-1, 3), agglomerate_ids=np.arange(n), visible_area=visible,
        scale_bar_mask=bar, params=optics, seed=seed,
        extra={"shape": "faceted", "gmd": gmd, "gsd": gsd, "absorption": absorption, "coverage": coverage,
               "lattice": sites is not None, "overlap": (cover >= 2) & ~bar},
    )
