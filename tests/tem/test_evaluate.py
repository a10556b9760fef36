"""The evaluation that produces the reported numbers, checked with an oracle and a blind method."""

import numpy as np
import pytest
from skimage.segmentation import relabel_sequential

from nanolens_tem.evaluation.evaluate import evaluate_synthetic, to_markdown
from nanolens_tem.evaluation.metrics import found_truth
from nanolens_tem.evaluation.splits import TEST_SEED0, eval_params
from nanolens_tem.science.segmentation import Segmentation, centres
from nanolens_tem.synthetic.agglomerates import generate, render

N = 3


@pytest.fixture(scope="module")
def truths():
    images = [generate(TEST_SEED0 + i, eval_params()) for i in range(N)]  # the images evaluate_synthetic makes
    return {s.image.tobytes(): s for s in images}


def test_an_oracle_scores_perfectly_and_a_depth_order_oracle_does_not(truths):
    def oracle(image, dark_particles=True):  # the ground truth's own instances and diameters
        s = truths[image.tobytes()]
        shown = np.unique(s.labels)[1:] - 1
        return Segmentation(s.labels, s.diameters[shown], centres(s.labels))

    def front_oracle(image, dark_particles=True):  # true particles, overlaps given to the front one
        s = truths[image.tobytes()]
        _, lab = render(s.labels.shape, s.centres, s.diameters / 2, overlaps="front")
        shown = np.unique(lab)[1:] - 1
        lab = relabel_sequential(lab)[0]   # hidden particles leave gaps in the label values
        return Segmentation(lab, s.diameters[shown], centres(lab))

    def blind(image, dark_particles=True):  # two half-frame blobs: finds nothing
        halves = np.ones(image.shape, np.int32)
        halves[:, image.shape[1] // 2:] = 2
        return Segmentation(halves, np.array([50.0, 60.0]), np.zeros((2, 2)))

    out = evaluate_synthetic({"oracle": oracle, "front": front_oracle, "blind": blind}, N)
    assert out["n_images"] == N and out["n_true_particles"] == sum(len(s.diameters) for s in truths.values())
    o, f, b = out["methods"]["oracle"], out["methods"]["front"], out["methods"]["blind"]
    assert o["f1_iou50"] == 1.0 and b["f1_iou50"] == 0.0
    # every particle owns part of the image, so the oracle finds them all, however little it owns
    assert o["recall_by_visible_fraction"] == [1.0 if n else None for n in out["n_per_visible_bin"]]
    assert o["gmd_err"] == pytest.approx(0.0, abs=1e-12) and o["gsd_err"] == pytest.approx(0.0, abs=1e-12)
    # labelling by depth order hides small particles behind large ones: misses, and a GMD read high
    assert f["f1_iou50"] < 0.95 and f["gmd_err"] > 0.0
    assert f["recall_by_visible_fraction"][0] < o["recall_by_visible_fraction"][-1]
    assert b["gmd_err"] > 0.5
    assert sum(out["n_per_visible_bin"]) == out["n_true_particles"]
    assert "| oracle |" in to_markdown([out], None)


def test_found_truth_indexes_particles_by_label():
    gt = np.zeros((10, 10), np.int32)
    gt[:4, :4], gt[6:, 6:] = 1, 3   # particle 2 (label 2) is hidden
    pred = np.where(gt == 3, 9, 0)
    np.testing.assert_array_equal(found_truth(gt, pred, 3), [False, False, True])


def test_the_faceted_condition_scores_the_faceted_generator():
    from nanolens_tem.evaluation.splits import eval_params_faceted
    from nanolens_tem.synthetic.faceted import generate_faceted

    seed0 = TEST_SEED0 + 200_000
    items = [generate_faceted(seed0 + i, eval_params_faceted()) for i in range(2)]
    truth = {s.image.tobytes(): s for s in items}

    def oracle(image, dark_particles=True):
        s = truth[image.tobytes()]   # a KeyError here means another generator made the images
        shown = np.unique(s.labels)[1:] - 1
        return Segmentation(s.labels, s.diameters[shown], centres(s.labels))

    out = evaluate_synthetic({"oracle": oracle}, 2, seed0=seed0, condition="faceted")
    assert out["condition"] == "faceted"
    assert out["methods"]["oracle"]["f1_iou50"] == 1.0
    assert out["n_true_particles"] == sum(len(s.diameters) for s in items)


def test_an_unknown_condition_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown condition 'spheres'"):
        evaluate_synthetic({}, 1, condition="spheres")


def test_an_evaluation_resumes_from_the_rows_it_wrote(tmp_path):
    """The verdict and magnification runs record each row as it is made: a second run finds them."""
    from nanolens_tem.evaluation.data import row_cache

    with row_cache(tmp_path) as (done, record):
        assert done == {}
        record({"id": "gold/a@1", "gmd": 10.0})
        record({"id": "gold/b@1", "gmd": 12.0})
    with row_cache(tmp_path) as (done, record):
        assert done == {"gold/a@1": {"id": "gold/a@1", "gmd": 10.0}, "gold/b@1": {"id": "gold/b@1", "gmd": 12.0}}
        record({"id": "gold/a@1", "gmd": 11.0})  # a row made again replaces the one before
    with row_cache(tmp_path) as (done, _):
        assert done["gold/a@1"]["gmd"] == 11.0 and len(done) == 2
