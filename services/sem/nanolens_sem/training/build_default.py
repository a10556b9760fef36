"""Rebuild the shipped SEM autoencoder bundle: train, export, calibrate the anomaly score on the
training images, score reconstruction on held-out tiles against PCA, write the bundle.

``python -m nanolens_sem.training.build_default [--work DIR] [--steps N] [--objective plain|denoise]``
(``make models``; the real training tiles come from ``NANOLENS_DATA/sem``, see evaluation/data.py)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundles"
NAME, VERSION = "sem-autoencoder", "1.0.0"


def heldout_images() -> list[np.ndarray]:
    """DeepSEM tiles of the sources the autoencoder does not train on (normalised), or [] without data."""
    from nanolens_sem.evaluation import data
    from nanolens_sem.science.images import normalise

    root = data.sem_root()
    if root is None:
        return []
    return [normalise(data.read_grey(i.path)) for i in data.deepsem_tiles(root) if i.group not in data.TRAIN_SOURCES]


def embedding_moments(session, images, tile: int = 128) -> dict:
    """Mean and standard deviation per embedding dimension over ``tile`` x ``tile`` windows of the
    training images (the served embedding is standardised with them before its L2 norm)."""
    from nanolens_sem.science.lens import EMBED_LAYERS, run_windows

    rows = []
    for img in images:
        for r in range(0, img.shape[0] - tile + 1, tile):
            for c in range(0, img.shape[1] - tile + 1, tile):
                res = run_windows(session, img[r:r + tile, c:c + tile], (), 512, 16, None, EMBED_LAYERS, None)
                rows.append(res.raw_embedding)
    rows = np.stack(rows)
    return {"mean": rows.mean(axis=0).tolist(), "std": rows.std(axis=0).tolist(), "n_windows": len(rows),
            "window_px": tile}


def manifest(metrics: dict, info: dict, cal: dict, moments: dict) -> dict:
    import torch

    from nanolens_sem.science.lens import EMBED_LAYERS, LAYERS, OUTPUTS, STRIDES
    from nanolens_sem.training.model import CHANNELS

    return {
        "schema_version": 1, "name": NAME, "version": VERSION, "task": "sem-autoencoder",
        "description": "convolutional autoencoder (four 3x3 stride-2 convolutions, 16-32-64-64 channels, a 1x1 "
                       "latent of 8 channels at stride 16; transposed-convolution decoder) on SEM images; outputs "
                       "the reconstruction, a tile embedding and every encoder layer for the lens",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, "height", "width"],
                    "note": "height and width multiples of 16; intensities 0-1"}],
        "outputs": [{"name": name, "dtype": "float32", "shape": ["batch", "channels", "height", "width"]}
                    for name in OUTPUTS if name != "embedding"]
        + [{"name": "embedding", "dtype": "float32", "shape": ["batch", "dim"]}],
        "class_names": [],
        "layers": list(LAYERS),
        "layer_channels": {name: CHANNELS[name] for name in LAYERS},
        "layer_strides": {name: STRIDES[name] for name in LAYERS},
        "embedding": {"layers": list(EMBED_LAYERS), "dim": 2 * sum(CHANNELS[n] for n in EMBED_LAYERS),
                      "definition": "per-channel mean and standard deviation of each layer over the image, "
                                    "standardised with mean and std (of the training windows), L2-normalised",
                      **moments},
        "preprocessing": {"percentiles": [0.5, 99.5], "multiple": 16, "window": 512,
                          "normalise": "(x - p0.5) / (p99.5 - p0.5) clipped to 0-1; the information bar removed"},
        "calibration": cal,
        "metrics": metrics,
        "training_data": {"sha256": info["sha256"], "n_items": info["n_items"], "source": info["source"]},
        "framework": {"torch": torch.__version__, "onnx_exporter": "dynamo", "steps": info["steps"],
                      "objective": info["objective"], "final_loss": info["final_loss"]},
    }


def main(argv=None) -> int:
    import onnxruntime as ort

    from nanolens_runtime.bundles import write_bundle
    from nanolens_sem.evaluation.reconstruction import compare
    from nanolens_sem.training import train

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("build/sem-models"))
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--objective", choices=("plain", "denoise"), default="plain")
    ap.add_argument("--reuse", action="store_true", help="bundle the model already trained in --work")
    args = ap.parse_args(argv)
    if not args.reuse:
        train.main(["--out", str(args.work), "--steps", str(args.steps), "--objective", args.objective])
    onnx_bytes = (args.work / "model.onnx").read_bytes()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    images, _, _ = train.training_images()
    cal = train.calibration(session, images)
    held = heldout_images()
    metrics = {f"heldout_{k}": float(v) for k, v in compare(session, images, held).items()} if held else {}
    info = json.loads((args.work / "training_data.json").read_text())
    moments = embedding_moments(session, images)
    out = write_bundle(BUNDLE_DIR / NAME / VERSION, onnx_bytes, manifest(metrics, info, cal, moments))
    if held:  # the real images are there: calibrate "nothing similar" for collection search
        from nanolens_sem.evaluation import search
        from nanolens_sem.evaluation.data import data_root
        from nanolens_sem.training.heads import Embedder

        search.write_manifest(out, search.evaluate(Embedder.load(out), data_root()))
    print("wrote", out, json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
