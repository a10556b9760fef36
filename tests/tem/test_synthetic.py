import numpy as np
import pytest

from nanolens_tem.science.segmentation import geometric_stats
from nanolens_tem.synthetic.agglomerates import SynthParams, aggregate, generate, render, sample_diameters


def test_deterministic_for_a_seed():
    a, b, c = generate(11), generate(11), generate(12)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.diameters, b.diameters)
    assert not np.array_equal(a.image, c.image)


def test_ground_truth_is_consistent():
    s = generate(3)
    n = len(s.diameters)
    assert s.image.dtype == np.uint8 and s.labels.shape == s.image.shape
    assert s.centres.shape == (n, 3) and s.agglomerate_ids.shape == (n,)
    assert s.labels.max() <= n
    assert np.array_equal(s.visible_area, np.bincount(s.labels.ravel(), minlength=n + 1)[1:])
    # agglomerate image is the per-particle id looked up through the labels
    k = s.labels > 0
    assert np.array_equal(s.agglomerate_labels[k], s.agglomerate_ids[s.labels[k] - 1] + 1)
    # particles are darker than the background
    assert s.image[k].mean() < s.image[~k].mean() - 20


def test_isolated_particles_measure_their_true_diameter():
    """Particles whose label is not touched by another particle have the GT area (within 3 %)."""
    from scipy import ndimage as ndi

    p = SynthParams(particles_per_agglomerate=(1, 1), max_agglomerates=10, coverage=1.0)
    checked = 0
    for seed in range(3):
        s = generate(seed, p)
        for k in range(1, s.labels.max() + 1):
            m = s.labels == k
            ring = ndi.binary_dilation(m, iterations=2) & ~m
            if m.sum() == 0 or (s.labels[ring] > 0).any():
                continue
            d = 2 * np.sqrt(m.sum() / np.pi)
            assert d == pytest.approx(s.diameters[k - 1], rel=0.03, abs=0.6)
            cy, cx = np.argwhere(m).mean(0)
            assert np.hypot(cy - s.centres[k - 1, 0], cx - s.centres[k - 1, 1]) < 0.5
            checked += 1
    assert checked >= 10


def test_lognormal_sampling_recovers_parameters():
    rng = np.random.default_rng(0)
    d = sample_diameters(rng, 20000, 30.0, 1.3)
    gmd, gsd = geometric_stats(d)
    assert gmd == pytest.approx(30.0, rel=0.01)
    assert gsd == pytest.approx(1.3, rel=0.01)


@pytest.mark.parametrize("method", ["bcca", "bpca"])
def test_aggregates_are_connected_with_bounded_overlap(method):
    rng = np.random.default_rng(1)
    r = np.full(30, 5.0)
    c = aggregate(rng, r, method, overlap_range=(0.1, 0.1))
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    # every particle touches another one, and nothing is pulled much closer than the overlap
    assert (dist.min(1) <= 10.0 + 1e-6).all()
    assert dist.min() > 10.0 * (1 - 0.1) * 0.5


def test_overlap_labels_follow_the_image_not_the_unseen_depth_order():
    """Thicknesses add, so a scene and its mirror image in depth give the same picture: the
    default labels must not change with it, while the front-most rule swaps the overlap."""
    c = np.array([[20.0, 20.0, 0.0], [20.0, 30.0, -10.0], [24.0, 24.0, 6.0]])
    r = np.array([12.0, 5.0, 4.0])
    mirrored = c * [1, 1, -1]
    thick, lab = render((40, 50), c, r)
    thick_m, lab_m = render((40, 50), mirrored, r)
    assert np.array_equal(thick, thick_m)
    assert np.array_equal(lab, lab_m)
    _, front = render((40, 50), c, r, overlaps="front")
    _, front_m = render((40, 50), mirrored, r, overlaps="front")
    assert not np.array_equal(front, front_m)
    # each particle owns its centre; between the large one and the small one the boundary is
    # where their distances relative to the radius meet (rho / r at column 27: 7/12 against 3/5)
    assert lab[20, 20] == 1 and lab[20, 30] == 2 and lab[24, 24] == 3
    assert lab[20, 27] == 1 and lab[20, 29] == 2
    # front-most: the small particle behind the large one (depth 6) is hidden altogether
    assert front[20, 30] == 2 and 3 not in front


def test_every_particle_owns_its_centre():
    """Under the default rule no particle is hidden behind another, so no true particle is
    unfindable by construction; under the front-most rule some are."""
    owners = {"deepest": [], "front": []}
    for seed in range(4):
        for rule, found in owners.items():
            s = generate(seed, SynthParams(overlaps=rule))
            cy, cx = np.rint(s.centres[:, :2]).astype(int).T
            found.append(s.labels[cy, cx] == np.arange(1, len(s.diameters) + 1))
    assert np.concatenate(owners["deepest"]).all()
    assert np.concatenate(owners["front"]).mean() < 0.95


def test_the_rules_disagree_only_where_particles_overlap():
    s, f = generate(7), generate(7, SynthParams(overlaps="front"))
    assert np.array_equal(s.image, f.image)
    r = s.diameters / 2
    yy, xx = np.mgrid[:s.labels.shape[0], :s.labels.shape[1]]
    covered = sum(((yy - cy) ** 2 + (xx - cx) ** 2 < rk**2).astype(int)
                  for (cy, cx, _), rk in zip(s.centres, r, strict=True))
    differ = s.labels != f.labels
    assert differ.any() and (covered[differ] >= 2).all()


def test_unknown_overlap_rule_is_refused_by_name():
    with pytest.raises(ValueError, match="overlaps.*'back'"):
        render((10, 10), np.zeros((1, 3)), np.ones(1), overlaps="back")


def test_scale_bar_is_excluded_from_ground_truth():
    s = generate(2, SynthParams(scale_bar=True))
    assert s.scale_bar_mask.any()
    assert (s.labels[s.scale_bar_mask] == 0).all()


def test_radial_power_spectrum_tells_white_noise_from_blur():
    from scipy import ndimage as ndi

    from nanolens_tem.evaluation.figures import radial_power_spectrum

    noise = np.random.default_rng(0).normal(0, 1, (256, 256))
    f, white = radial_power_spectrum(noise)
    _, blurred = radial_power_spectrum(ndi.gaussian_filter(noise, 2.0))
    assert f[0] > 0 and f[-1] < 0.5 and len(f) == len(white)
    low, high = slice(2, 10), slice(-10, None)
    # white noise is flat (within sampling scatter); blur removes the high frequencies
    assert 0.5 < white[high].mean() / white[low].mean() < 2.0
    assert blurred[high].mean() < 1e-3 * blurred[low].mean()


def test_training_sets_of_the_two_rules_differ_only_in_the_overlap_targets():
    """``cnn_train --sphere-overlaps``: the same images, the same foreground, other owners of the
    overlaps (so the distance targets differ, on a minority of the foreground)."""
    pytest.importorskip("torch")
    from nanolens_tem.training.cnn_train import make_synthetic_set

    x_deep, y_deep = make_synthetic_set(2, seed0=5)
    x_front, y_front = make_synthetic_set(2, seed0=5, overlaps="front")
    assert np.array_equal(x_deep, x_front) and np.array_equal(y_deep[:, 0], y_front[:, 0])
    changed = (y_deep[:, 2] != y_front[:, 2]).mean()
    assert 0.0 < changed < 0.5 * y_deep[:, 0].mean()
