import numpy as np
import pytest

from nanolens_tem.ann import decode, transform_features
from nanolens_tem.features import FEATURE_NAMES


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
