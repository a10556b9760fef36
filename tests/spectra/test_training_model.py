"""The reference classifier: PCA at 95 % variance, in-graph normalisation, ONNX parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from nanolens_spectra.science.preprocessing import SWCNT_REGIONS_CM1, PreprocessParams, preprocess
from nanolens_spectra.synthetic.swcnt import generate_spectra
from support import require_train_extra

require_train_extra()

import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from nanolens_spectra.training.export import check_parity, export_onnx, onnx_opset, run_onnx  # noqa: E402
from nanolens_spectra.training.model import (  # noqa: E402
    TrainParams,
    fit,
    fit_pca,
    n_components_for,
    normalise,
    predict_proba,
)

FAST = TrainParams(epochs=15)


@pytest.fixture(scope="module")
def features():
    d = generate_spectra(40, seed=21)
    x = preprocess(d.spectra, d.axis, PreprocessParams(regions=SWCNT_REGIONS_CM1))
    return x, d.labels, d.class_names


@pytest.fixture(scope="module")
def fitted(features):
    x, y, names = features
    return fit(x, y, names, FAST, seed=1)


@pytest.fixture(scope="module")
def onnx_bytes(fitted, features):
    return export_onnx(fitted, sample=features[0][:20])


def test_pca_keeps_the_95_percent_count(features):
    x = features[0]
    ours = fit_pca(x, 0.95)
    reference = PCA(n_components=0.95, svd_solver="full").fit(normalise(x))
    assert ours.n_components == reference.n_components_
    cumulative = np.cumsum(ours.explained)
    assert cumulative[ours.n_components - 1] > 0.95 >= cumulative[ours.n_components - 2]
    # Whitened scores have unit variance on the training data.
    scores = (normalise(x) - ours.mean) @ ours.components.T / ours.scale
    np.testing.assert_allclose(scores.std(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_n_components_for_edge_cases():
    assert n_components_for(np.array([0.5, 0.3, 0.2]), 0.95) == 3
    assert n_components_for(np.array([0.96, 0.04]), 0.95) == 1
    assert n_components_for(np.array([0.5, 0.45, 0.05]), 0.95) == 3   # "more than", like sklearn


def test_model_shapes_and_probabilities(fitted, features):
    x = features[0]
    assert fitted.n_features == x.shape[1]
    assert fitted.n_components == fit_pca(x, 0.95).n_components
    p = predict_proba(fitted, x)
    assert p.dtype == np.float32 and p.shape == (x.shape[0], 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert fitted.mlp[0].in_features == fitted.n_components
    assert [m.out_features for m in fitted.mlp if isinstance(m, torch.nn.Linear)] == [25, 25, 3]


def test_pca_layer_is_frozen_by_training(features):
    x, y, names = features
    model = fit(x, y, names, TrainParams(epochs=2), seed=0)
    pca = fit_pca(x, 0.95)
    np.testing.assert_allclose(model.pca.weight.detach().numpy(),
                               (pca.components / pca.scale[:, None]).astype(np.float32), rtol=1e-6)


def test_normalisation_is_inside_the_model(fitted, features):
    x = features[0][:10]
    np.testing.assert_allclose(predict_proba(fitted, 37.5 * x), predict_proba(fitted, x), atol=1e-5)


def test_fit_is_deterministic_in_its_seed(features):
    x, y, names = features
    a = fit(x, y, names, TrainParams(epochs=3), seed=5)
    b = fit(x, y, names, TrainParams(epochs=3), seed=5)
    c = fit(x, y, names, TrainParams(epochs=3), seed=6)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.mlp[0].weight, c.mlp[0].weight)


def test_fit_rejects_bad_labels(features):
    x, y, names = features
    with pytest.raises(ValueError, match="labels"):
        fit(x, y + 3, names, FAST)
    with pytest.raises(ValueError, match="labels must have shape"):
        fit(x, y[:-1], names, FAST)


def test_onnx_matches_torch(onnx_bytes, fitted, features):
    x = features[0]
    for batch in (x[:1], x[:37], 5.0 * x[-3:]):
        assert check_parity(onnx_bytes, fitted, batch) <= 1e-5
    got = run_onnx(onnx_bytes, x)
    assert got.dtype == np.float32 and got.shape == (x.shape[0], 3)


def test_onnx_signature(onnx_bytes, fitted):
    model = onnx.load_from_string(onnx_bytes)
    (inp,), (out, ood) = model.graph.input, model.graph.output
    assert inp.name == "spectra" and out.name == "probabilities" and ood.name == "ood_score"
    assert len(ood.type.tensor_type.shape.dim) == 1  # one score per spectrum
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].dim_value          # dynamic batch
    assert in_dims[1].dim_value == fitted.n_features
    assert out.type.tensor_type.shape.dim[1].dim_value == 3
    assert onnx_opset(onnx_bytes) >= 17
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def test_export_is_deterministic(fitted, onnx_bytes):
    assert export_onnx(fitted) == onnx_bytes
