"""Train the LPEM U-Net on synthetic liquid-cell frames and export it to ONNX.

``python -m nanolens_lpem.training.train --out DIR [--steps N] [--n-frames N]``

Training frames: one 128 x 128 frame per seed (``TRAIN_SEEDS``) of
:mod:`nanolens_lpem.synthetic.movies`, its parameters drawn per seed by :func:`train_params`
(contrast 0.05-0.5, dose 5-200 e/px, blur 0.5-2 px, radii 3-16 px, all three shapes, touching
particles). Evaluation seeds start at 100000 and are never trained on. Targets: foreground and
particle centre (pixels deeper than half of their particle's largest edge distance).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from nanolens_lpem.science.segmentation import flatten
from nanolens_lpem.synthetic.movies import MovieParams, frames

TRAIN_SEEDS = range(0, 4000)
CROP = 128


def train_params(rng: np.random.Generator, shape=(CROP, CROP)) -> MovieParams:
    """Random liquid-cell conditions for one training frame."""
    r_lo = rng.uniform(3.0, 10.0)
    r_hi = r_lo * rng.uniform(1.0, 1.6)
    density = rng.uniform(0.05, 0.35)  # particle area fraction
    n = max(1, int(density * shape[0] * shape[1] / (np.pi * ((r_lo + r_hi) / 2) ** 2)))
    return MovieParams(
        shape=shape, n_frames=1, n_particles=min(n, 80), radius_range=(r_lo, r_hi),
        shape_mix=tuple(rng.dirichlet([2, 1, 1])), contrast=float(rng.uniform(0.05, 0.5)),
        dose=float(np.exp(rng.uniform(np.log(5), np.log(200)))), blur_sigma=float(rng.uniform(0.5, 2.0)),
        background_gradient=float(rng.uniform(0, 0.4)), min_separation=float(rng.uniform(-2, 3)), margin=8)


def targets(labels: np.ndarray) -> np.ndarray:
    """2 x H x W float32: foreground, centre (edge distance above half its particle's maximum)."""
    fg = labels > 0
    dist = ndi.distance_transform_edt(fg)
    # boundaries between touching instances count as edges too
    edges = np.zeros_like(fg)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    dist = np.minimum(dist, ndi.distance_transform_edt(~edges))
    peak = ndi.maximum(dist, labels, index=np.arange(labels.max() + 1)) if labels.max() else np.zeros(1)
    centre = fg & (dist >= 0.5 * peak[labels])
    return np.stack([fg, centre]).astype(np.float32)


def make_data(seeds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        frame = next(frames(train_params(rng), seed))
        xs.append(flatten(frame.image))
        ys.append(targets(frame.labels))
    return np.stack(xs)[:, None], np.stack(ys)


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Three poolings, ``base`` channels at full resolution, 2 output logits (foreground, centre)."""

    def __init__(self, base: int = 8):
        super().__init__()
        b = base
        self.e1, self.e2, self.e3, self.e4 = block(1, b), block(b, 2 * b), block(2 * b, 4 * b), block(4 * b, 8 * b)
        self.pool = nn.MaxPool2d(2)
        self.u3, self.d3 = nn.ConvTranspose2d(8 * b, 4 * b, 2, 2), block(8 * b, 4 * b)
        self.u2, self.d2 = nn.ConvTranspose2d(4 * b, 2 * b, 2, 2), block(4 * b, 2 * b)
        self.u1, self.d1 = nn.ConvTranspose2d(2 * b, b, 2, 2), block(2 * b, b)
        self.head = nn.Conv2d(b, 2, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(self.pool(e1))
        e3 = self.e3(self.pool(e2))
        e4 = self.e4(self.pool(e3))
        d3 = self.d3(torch.cat([self.u3(e4), e3], 1))
        d2 = self.d2(torch.cat([self.u2(d3), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        return self.head(d1)


def train(x: np.ndarray, y: np.ndarray, steps: int, batch: int = 16, base: int = 8, seed: int = 0,
          log_every: int = 100) -> tuple[UNet, list[float]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = UNet(base)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    bce = nn.BCEWithLogitsLoss()
    hist, t0 = [], time.time()
    model.train()
    for step in range(steps):
        idx = rng.integers(0, len(x), batch)
        xb, yb = x[idx], y[idx]
        k = int(rng.integers(4))  # rotations and flips
        xb, yb = np.rot90(xb, k, (2, 3)), np.rot90(yb, k, (2, 3))
        if rng.random() < 0.5:
            xb, yb = xb[..., ::-1], yb[..., ::-1]
        logits = model(torch.from_numpy(np.ascontiguousarray(xb)))
        target = torch.from_numpy(np.ascontiguousarray(yb))
        loss = bce(logits[:, :1], target[:, :1]) + 2.0 * bce(logits[:, 1:], target[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {np.mean(hist[-log_every:]):.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return model, hist


def export_onnx(model: nn.Module) -> bytes:
    """ONNX bytes with dynamic batch, height and width (sides multiples of 8)."""
    model.eval()
    x = torch.zeros(1, 1, 64, 64)
    dims = {0: torch.export.Dim("batch", max=256), 2: 8 * torch.export.Dim("h8", min=1, max=1024),
            3: 8 * torch.export.Dim("w8", min=1, max=1024)}
    prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, input_names=["image"],
                             output_names=["maps"], dynamic_shapes={"x": dims}, verbose=False)
    return prog.model_proto.SerializeToString()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n-frames", type=int, default=len(TRAIN_SEEDS))
    ap.add_argument("--base", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = TRAIN_SEEDS[:args.n_frames]
    t0 = time.time()
    x, y = make_data(seeds)
    print(f"{len(x)} frames in {time.time() - t0:.0f}s", flush=True)
    model, hist = train(x, y, args.steps, base=args.base)
    torch.save(model.state_dict(), args.out / "model.pt")
    (args.out / "model.onnx").write_bytes(export_onnx(model))
    import hashlib
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    (args.out / "training_data.json").write_text(json.dumps({
        "sha256": digest, "n_items": len(x),
        "source": f"nanolens_lpem.synthetic.movies, one {CROP}x{CROP} frame per seed {seeds.start}..{seeds.stop - 1}, "
                  "nanolens_lpem.training.train.train_params()",
        "steps": args.steps, "final_loss": float(np.mean(hist[-100:])), "base": args.base}, indent=1))
    print("wrote", args.out, f"{time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
