import numpy as np
import pytest

from nanolens_tem.faceted import SHAPES, FacetedParams, _apothem, generate_faceted, shape_distance


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
    from nanolens_tem.cnn import RADIUS_UNIT
    from nanolens_tem.training.cnn_train import targets_from_synthetic

    s = generate_faceted(4)
    t = targets_from_synthetic(s)
    fg = s.labels > 0
    assert np.array_equal(t[0] > 0, fg)
    k = s.labels[fg] - 1
    assert t[3][fg] == pytest.approx(s.diameters[k] / 2 / RADIUS_UNIT)
    for j in range(1, s.labels.max() + 1):    # outline distance peaks at 1 in every instance
        m = s.labels == j
        if m.any():
            assert t[2][m].max() == pytest.approx(1.0)


@pytest.mark.parametrize("bad, words", [
    ({"shape_weights": (0, 0, 0)}, "shape_weights"),
    ({"shape_weights": (1, 1)}, "shape_weights"),
    ({"coverage": 1.5}, "coverage"),
    ({"gap": (0.1, 0.01)}, "gap"),
    ({"gsd": 0.9}, "gsd"),
    ({"rounding": (0.0, 1.2)}, "rounding"),
    ({"shape": (8, 256)}, "shape"),
])
def test_bad_parameters_are_refused_by_name(bad, words):
    with pytest.raises(ValueError, match=words):
        FacetedParams(**bad)
