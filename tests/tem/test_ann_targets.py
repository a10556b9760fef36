import numpy as np
import pytest

from nanolens_tem.science.ann import decode, transform_features
from nanolens_tem.science.features import FEATURE_NAMES


def test_decode_uses_the_regressor_of_the_predicted_count():
    logits = np.array([[0.0, 5.0, 0, 0, 0], [9.0, 0, 0, 0, 0]])
    reg = np.zeros((2, 5, 5))
    reg[0, 1, :2] = np.log([0.6, 0.3])
    reg[1, 0, 0] = np.log(1.0)
    area = np.array([1000.0, 314.159])
    counts, diams = decode(logits, reg, area)
    assert counts.tolist() == [2, 1]
    assert diams[0] == pytest.approx(2 * np.sqrt(np.array([600.0, 300.0]) / np.pi))
    assert diams[1] == pytest.approx([20.0], rel=1e-4)


def test_transform_logs_only_dimensional_features():
    f = np.ones((1, len(FEATURE_NAMES))) * np.e
    t = transform_features(f)
    assert t[0, FEATURE_NAMES.index("area")] == pytest.approx(1.0)
    assert t[0, FEATURE_NAMES.index("solidity")] == pytest.approx(np.e)


def test_targets_from_instances():
    pytest.importorskip("torch")
    from nanolens_tem.training.cnn_train import boundary_map, targets_from_instances

    lab = np.zeros((40, 60), np.int32)
    lab[5:35, 5:29] = 1
    lab[5:35, 30:55] = 2          # separated from 1 by a one-pixel background line
    t = targets_from_instances(lab)
    assert t.shape == (4, 40, 60)
    assert t[1][20, 29] == 1        # the gap is a boundary
    assert t[1][20, 15] == 0
    assert t[2][lab == 1].max() == pytest.approx(1.0)
    assert t[3][20, 15] * 32 == pytest.approx(np.sqrt(30 * 24 / np.pi), rel=1e-5)
    touching = np.zeros((10, 10), np.int32)
    touching[:, :5], touching[:, 5:] = 1, 2
    assert boundary_map(touching)[:, 4:6].all() and not boundary_map(touching)[:, :4].any()


def test_shipped_ann_bundle_sizes_small_agglomerates():
    from nanolens_runtime.bundles import ModelBundle
    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.evaluation.splits import TUNE_SEED0, eval_params_small
    from nanolens_tem.science.ann import AnnSizer
    from nanolens_tem.science.segmentation import geometric_stats
    from nanolens_tem.synthetic.agglomerates import generate

    path = latest_bundle("tem-ann")
    if path is None:
        pytest.skip("no shipped tem-ann bundle")
    assert ModelBundle.load(path).task == "agglomerate-sizing"
    sizer = AnnSizer.load(path)
    d_pred, d_true = [], []
    for i in range(3):
        s = generate(TUNE_SEED0 + i, eval_params_small())
        seg = sizer.segment(s.image)
        assert np.isfinite(seg.diameters).all() and len(seg.diameters) == len(seg.centres)
        d_pred.append(seg.diameters)
        d_true.append(s.diameters)
    g_pred, _ = geometric_stats(np.concatenate(d_pred))
    g_true, _ = geometric_stats(np.concatenate(d_true))
    assert g_pred == pytest.approx(g_true, rel=0.2)


def test_gold_instances_cut_bridges(tmp_path):
    import tifffile

    from nanolens_tem.evaluation.data import gold_instances

    m = np.zeros((40, 80, 3), np.uint8)
    m[5:35, 5:38, 0] = 255
    m[5:35, 40:75, 0] = 255
    m[18:20, 38:40, 0] = 255          # a 2 px bridge between the two particles
    tifffile.imwrite(tmp_path / "m.tif", m)
    assert gold_instances(tmp_path / "m.tif").max() == 1
    cut = gold_instances(tmp_path / "m.tif", cut_bridges=2)
    assert cut.max() == 2 and (cut > 0).sum() == (m[..., 0] > 0).sum()
