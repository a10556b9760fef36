import numpy as np
import pytest
from scipy import ndimage as ndi

from nanolens_tem.synthetic.agglomerates import SynthParams
from nanolens_tem.synthetic.faceted import SHAPES, FacetedParams, _apothem, generate_faceted, shape_distance


def test_deterministic_for_a_seed():
    a, b, c = generate_faceted(5), generate_faceted(5), generate_faceted(6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.diameters, b.diameters)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("rounding", [0.05, 0.3])
def test_shape_area_is_the_equivalent_circle_of_its_diameter(kind, rounding):
    """The apothem solved from the area gives a rasterised shape of that area (within 1.5 %)."""
    d = 60.0
    n = SHAPES[kind]
    a = _apothem(n, np.pi * d * d / 4, rounding)
    yy, xx = np.mgrid[0:120, 0:120].astype(float)
    inside = shape_distance(yy, xx, (60.3, 59.7), n, a, rounding, angle=0.4) <= 0
    assert 2 * np.sqrt(inside.sum() / np.pi) == pytest.approx(d, rel=0.015)
    # the rounded polygon lies between its inscribed circle and the sharp polygon's circumcircle
    r = np.hypot(yy - 60.3, xx - 59.7)
    assert inside[r < a - 1].all()
    assert not inside[r > (a / np.cos(np.pi / n) if n else a) + 1].any()


def test_signed_distance_is_a_distance():
    """Exact signed distance: |grad| = 1 away from the medial axis, so the distance of points
    straight out from an edge's midpoint grows one for one."""
    a, rounding = 20.0, 0.2
    ys = np.arange(0.0, 15.0)
    # the edge whose outward normal points along +x (angle 0: normals at 0, 120, 240 degrees)
    d = shape_distance(np.zeros_like(ys), a + ys, (0.0, 0.0), 3, a, rounding, angle=0.0)
    assert d == pytest.approx(ys, abs=1e-9)


def test_ground_truth_matches_the_image():
    s = generate_faceted(2)
    n = len(s.diameters)
    assert n > 10 and s.extra["shape"] == "faceted"
    assert s.labels.max() == n and s.centres.shape == (n, 3)
    assert np.array_equal(s.visible_area, np.bincount(s.labels.ravel(), minlength=n + 1)[1:])
    k = s.labels > 0
    assert s.image[k].mean() < s.image[~k].mean() - 20
    assert abs(k.mean() - s.extra["coverage"]) < 0.25


def _inside_frame(s):
    """Particles whose whole outline lies inside the frame."""
    h, w = s.labels.shape
    cy, cx, d = s.centres[:, 0], s.centres[:, 1], s.diameters
    return (cy > d) & (cy < h - d) & (cx > d) & (cx < w - d)


def test_particles_keep_their_gap_unless_allowed_to_overlap():
    from nanolens_tem.training.cnn_train import boundary_map

    p = FacetedParams(overlap_fraction=0.0, gap=(0.05, 0.05))
    for seed in range(3):
        s = generate_faceted(seed, p)
        assert not boundary_map(s.labels).any()       # no two particles touch
        inner = _inside_frame(s)                        # and none hides part of another
        ecd = 2 * np.sqrt(s.visible_area[inner] / np.pi)
        assert ecd == pytest.approx(s.diameters[inner], rel=0.05, abs=1.0)


def test_overlaps_stay_a_minority_and_hide_the_back_particle():
    p = FacetedParams(overlap_fraction=0.3, coverage=0.6)
    partly_hidden, n = 0, 0
    for seed in range(3):
        s = generate_faceted(seed, p)
        inner = _inside_frame(s)
        shown = s.visible_area[inner] / (np.pi * s.diameters[inner] ** 2 / 4)
        partly_hidden += int((shown < 0.9).sum())
        n += int(inner.sum())
    assert 0 < partly_hidden <= 0.3 * n + 3


def test_training_targets_follow_the_outline_and_the_whole_radius():
    from nanolens_tem.science.cnn import RADIUS_UNIT
    from nanolens_tem.training.cnn_train import targets_from_synthetic

    s = generate_faceted(4)
    t = targets_from_synthetic(s)
    fg = s.labels > 0
    assert np.array_equal(t[0] > 0, fg)
    k = s.labels[fg] - 1
    assert t[3][fg] == pytest.approx(s.diameters[k] / 2 / RADIUS_UNIT)
    own = ~s.extra["overlap"]
    for j in range(1, s.labels.max() + 1):    # outline distance peaks at 1 in every instance
        m = (s.labels == j) & own
        if m.any():
            assert t[2][m].max() == pytest.approx(1.0)


def test_overlaps_are_marked_and_can_be_trained_as_boundary():
    """Pixels two crystals cover are darker (optical depths add), and the ``dense`` recipe's
    training targets part the crystals there, as real masks do: particle, boundary, distance 0."""
    from nanolens_tem.training.cnn_train import targets_from_synthetic

    p = FacetedParams(gap=(-0.08, -0.02), overlap_fraction=0.5, coverage=0.6, contrast_spread=0.0,
                      absorption=0.8, optics=SynthParams(psf_sigma=0.7, dose=3000.0))
    s = generate_faceted(11, p)
    overlap, single = s.extra["overlap"], (s.labels > 0) & ~s.extra["overlap"]
    assert overlap.sum() > 200 and (s.labels[overlap] > 0).all()
    assert s.image[overlap].mean() < s.image[single].mean() - 15
    t = targets_from_synthetic(s, overlap_as_boundary=True)
    assert (t[0][overlap] == 1).all() and (t[1][overlap] == 1).all() and (t[2][overlap] == 0).all()
    # by default (tem-unet 1.1.0's recipe) an overlap belongs to the front crystal
    front = targets_from_synthetic(s)
    assert (front[0][overlap] == 1).all() and front[1][overlap].mean() < 0.5 and front[2][overlap].max() > 0.3
    # without overlaps allowed, nothing is marked
    assert not generate_faceted(11, FacetedParams(gap=(0.05, 0.05), overlap_fraction=0.0)).extra["overlap"].any()


def test_lattice_images_are_rows_of_close_packed_triangles():
    """A row superlattice: each crystal's nearest neighbour sits half a triangle side away
    (about 0.67 GMD), much closer and more regular than in a random packing."""
    from scipy.spatial import cKDTree

    def nearest(s):
        inner = _inside_frame(s)
        d, _ = cKDTree(s.centres[:, :2]).query(s.centres[inner, :2], k=2)
        return d[:, 1] / s.extra["gmd"]

    lattice = FacetedParams(gmd=24.0, gsd=1.05, lattice_fraction=1.0, rounding=(0.1, 0.1))
    s = generate_faceted(3, lattice)
    assert s.extra["lattice"] and len(s.diameters) > 40
    nn = nearest(s)
    assert 0.55 < np.median(nn) < 0.8
    assert np.quantile(nn, 0.9) < 0.9
    loose = generate_faceted(3, FacetedParams(gmd=24.0, gsd=1.05, rounding=(0.1, 0.1)))
    assert not loose.extra["lattice"] and np.median(nearest(loose)) > 0.9


def test_bend_contours_darken_bands_inside_crystals():
    """With bend contours, the grey levels inside a crystal spread much wider than across its
    plain plateau (one crystal per image, noise-free exposure, no other contrast variation)."""

    def interior_spread(bend):
        spreads = []
        for seed in range(6):
            p = FacetedParams(shape=(96, 96), gmd=60.0, gsd=1.0, coverage=0.01, ramp=(0.05, 0.05),
                              contrast_spread=0.0, bend_contours=bend,
                              optics=SynthParams(psf_sigma=0.5, dose=1e6, film_texture=0.0))
            s = generate_faceted(seed, p)
            core = ndi.binary_erosion(s.labels == 1, iterations=6)
            if core.sum() > 100:
                spreads.append(np.percentile(s.image[core], 95) - np.percentile(s.image[core], 5))
        return np.median(spreads)

    assert interior_spread(1.0) > interior_spread(0.0) + 10


@pytest.mark.parametrize("bad, words", [
    ({"shape_weights": (0, 0, 0)}, "shape_weights"),
    ({"shape_weights": (1, 1)}, "shape_weights"),
    ({"coverage": 1.5}, "coverage"),
    ({"gap": (0.1, 0.01)}, "gap"),
    ({"gap": (-0.5, 0.0)}, "gap"),
    ({"lattice_fraction": 1.5}, "lattice_fraction"),
    ({"bend_contours": -0.1}, "bend_contours"),
    ({"gsd": 0.9}, "gsd"),
    ({"rounding": (0.0, 1.2)}, "rounding"),
    ({"shape": (8, 256)}, "shape"),
])
def test_bad_parameters_are_refused_by_name(bad, words):
    with pytest.raises(ValueError, match=words):
        FacetedParams(**bad)


def test_unknown_faceted_recipe_is_refused_by_name():
    from nanolens_tem.training.cnn_train import make_faceted_set

    with pytest.raises(ValueError, match="'tiled'.*packed"):
        make_faceted_set(1, recipe="tiled")
