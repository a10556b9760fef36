"""Train the SEM autoencoder on tiles of the real SEM images (training sources only) and synthetic
textures; export one ONNX graph; compute the anomaly calibration on the training tiles.

``python -m nanolens_sem.training.train --out DIR [--steps N] [--objective plain|denoise] [--synthetic-only]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

TILE = 64


def training_images(synthetic_only: bool = False, n_synthetic: int = 64, seed0: int = 0):
    """(images normalised 0-1, a description of the sources). Real training sources when the data
    is there (nanolens_sem.evaluation.data.TRAIN_SOURCES), plus synthetic textures seeds seed0.."""
    from nanolens_sem.evaluation import data
    from nanolens_sem.science.images import normalise
    from nanolens_sem.synthetic.textures import generate

    images, names = [], []
    root = None if synthetic_only else data.sem_root()
    if root is not None:
        for item in data.deepsem_tiles(root):
            if item.group in data.TRAIN_SOURCES:
                images.append(normalise(data.read_grey(item.path)))
                names.append(item.path.name)
    for s in range(seed0, seed0 + n_synthetic):
        images.append(generate(s, (256, 256)).image)
    source = (f"DeepSEM GaAs nanowire tiles of sources {', '.join(data.TRAIN_SOURCES)} ({len(names)} tiles: "
              f"{', '.join(names)}); " if names else "") + \
        f"nanolens_sem.synthetic.textures seeds {seed0}..{seed0 + n_synthetic - 1} at 256 x 256"
    return images, names, source


def sample(rng: np.random.Generator, images, n: int) -> np.ndarray:
    out = np.empty((n, 1, TILE, TILE), np.float32)
    for i in range(n):
        img = images[int(rng.integers(len(images)))]
        r, c = rng.integers(0, img.shape[0] - TILE + 1), rng.integers(0, img.shape[1] - TILE + 1)
        t = img[r:r + TILE, c:c + TILE]
        t = np.rot90(t, int(rng.integers(4)))
        if rng.random() < 0.5:
            t = t[:, ::-1]
        gamma = float(np.exp(rng.normal(0, 0.15)))
        out[i, 0] = np.clip(t, 0, 1) ** gamma
    return out


def train(images, steps: int, objective: str = "plain", batch: int = 32, seed: int = 0, log=print):
    import torch

    from nanolens_sem.training.model import AutoEncoder

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    ae = AutoEncoder()
    opt = torch.optim.Adam(ae.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hist = []
    for step in range(steps):
        x = torch.from_numpy(sample(rng, images, batch))
        inp = x
        if objective == "denoise":
            inp = torch.clamp(x + 0.1 * torch.randn_like(x), 0, 1)
        loss = torch.mean((ae(inp) - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append(float(loss))
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step} loss {np.mean(hist[-200:]):.5f}")
    return ae.eval(), hist


def calibration(session, images) -> dict:
    """Quantiles (0, 0.5, ..., 100 %) of the training images' block errors and tile errors, from
    the same windowed pass that serving runs (nanolens_sem.science.lens.run_windows)."""
    from nanolens_sem.science.lens import BLOCK as LENS_BLOCK
    from nanolens_sem.science.lens import run_windows

    per = TILE // LENS_BLOCK
    blocks, tiles = [], []
    for img in images:
        err = run_windows(session, img, layers=(), window=512).block_errors
        h, w = (err.shape[0] // per) * per, (err.shape[1] // per) * per
        blocks.append(err.ravel())
        tiles.append(err[:h, :w].reshape(h // per, per, w // per, per).mean(axis=(1, 3)).ravel())
    q = np.linspace(0, 100, 201)
    blocks, tiles = np.concatenate(blocks), np.concatenate(tiles)
    return {"block": LENS_BLOCK, "tile": TILE, "percent": q.round(2).tolist(),
            "block_error_quantiles": np.percentile(blocks, q).tolist(),
            "tile_error_quantiles": np.percentile(tiles, q).tolist(),
            "n_blocks": int(blocks.size), "n_tiles": int(tiles.size)}


def main(argv=None) -> int:
    import onnxruntime as ort
    import torch

    from nanolens_sem.training.model import export_onnx

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("build/sem-models"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--objective", choices=("plain", "denoise"), default="plain")
    ap.add_argument("--synthetic-only", action="store_true")
    ap.add_argument("--n-synthetic", type=int, default=64)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    images, names, source = training_images(args.synthetic_only, args.n_synthetic)
    print(f"{len(images)} training images ({len(names)} real)", flush=True)
    ae, hist = train(images, args.steps, args.objective, log=lambda m: print(m, flush=True))
    torch.save(ae.state_dict(), args.out / "model.pt")
    onnx_bytes = export_onnx(ae)
    (args.out / "model.onnx").write_bytes(onnx_bytes)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    cal = calibration(session, images)
    digest = hashlib.sha256()
    for img in images:
        digest.update(np.ascontiguousarray(img).tobytes())
    (args.out / "training_data.json").write_text(json.dumps({
        "sha256": digest.hexdigest(), "n_items": len(images), "source": source, "steps": args.steps,
        "objective": args.objective, "final_loss": float(np.mean(hist[-200:])), "calibration": cal}, indent=1))
    print("wrote", args.out, f"{time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
