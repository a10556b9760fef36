"""The convolutional autoencoder (torch) and its ONNX export with every output the service reads."""

from __future__ import annotations

import torch
from torch import nn

from nanolens_sem.science.lens import OUTPUTS  # the graph's outputs are what serving reads

CHANNELS = {"enc1": 16, "enc2": 32, "enc3": 64, "enc4": 64, "latent": 8}


def conv(cin, cout, stride=2):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU())


def up(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.ReLU())


def moments(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3))
    var = (x * x).mean(dim=(2, 3)) - mean * mean
    return torch.cat([mean, torch.sqrt(torch.clamp(var, min=0.0) + 1e-8)], 1)


class AutoEncoder(nn.Module):
    """enc1..enc4: 3x3 stride-2 convolutions with ReLU (16, 32, 64, 64 channels); latent: a 1x1
    convolution to 8 channels at stride 16 (a 64 x 64 tile: 128 numbers); the decoder mirrors it
    with 4x4 transposed convolutions and ends in a sigmoid."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2, self.enc3, self.enc4 = conv(1, 16), conv(16, 32), conv(32, 64), conv(64, 64)
        self.latent = nn.Conv2d(64, CHANNELS["latent"], 1)
        self.decoder = nn.Sequential(up(CHANNELS["latent"], 64), up(64, 32), up(32, 16), up(16, 8),
                                     nn.Conv2d(8, 1, 3, 1, 1), nn.Sigmoid())

    def encode(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        return e1, e2, e3, e4, self.latent(e4)

    def forward(self, x):
        return self.decoder(self.encode(x)[-1])


class Exported(nn.Module):
    """What the ONNX graph returns: reconstruction, embedding, then every lens layer."""

    def __init__(self, ae: AutoEncoder):
        super().__init__()
        self.ae = ae

    def forward(self, image):
        e1, e2, e3, e4, z = self.ae.encode(image)
        rec = self.ae.decoder(z)
        emb = torch.cat([moments(e1), moments(e2), moments(e3), moments(e4)], 1)
        emb = emb / torch.sqrt((emb * emb).sum(1, keepdim=True) + 1e-12)
        return rec, emb, e1, e2, e3, e4, z




def export_onnx(ae: AutoEncoder) -> bytes:
    import io

    model = Exported(ae).eval()
    x = torch.zeros(1, 1, 64, 64)
    batch = torch.export.Dim("batch")
    h, w = torch.export.Dim("h16", min=1, max=1024), torch.export.Dim("w16", min=1, max=1024)
    prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, input_names=["image"],
                             output_names=list(OUTPUTS), dynamic_shapes={"image": {0: batch, 2: 16 * h, 3: 16 * w}})
    buf = io.BytesIO()
    prog.save(buf) if hasattr(prog, "save") else None
    data = buf.getvalue()
    if not data:
        data = prog.model_proto.SerializeToString()
    return data
