"""Rebuild the shipped LPEM U-Net bundle: train, export, score on held-out seeds, write the bundle.

``python -m nanolens_lpem.training.build_default [--work DIR] [--steps N]`` (``make models``)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundles"
NAME, VERSION = "lpem-unet", "1.0.0"
EVAL_SEEDS = range(100_000, 100_200)  # held out: never trained on


def heldout_metrics(onnx_path: Path) -> dict:
    """Instance F1 (IoU >= 0.5), count error and pixel IoU on 200 held-out synthetic frames."""
    import onnxruntime as ort

    from nanolens_lpem.evaluation.metrics import match, summarise
    from nanolens_lpem.science.segmentation import instances, predict_maps
    from nanolens_lpem.synthetic.movies import frames
    from nanolens_lpem.training.train import train_params

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = []
    for seed in EVAL_SEEDS:
        frame = next(frames(train_params(np.random.default_rng(seed), shape=(256, 256)), seed))
        maps = predict_maps(session, frame.image[None])[0]
        rows.append(match(frame.labels, instances(maps)))
    s = summarise(rows)
    return {"synthetic_heldout_n_images": float(s["n_images"]), "synthetic_heldout_n_particles": float(s["n_truth"]),
            "synthetic_heldout_f1_iou50": s["f1_iou50"], "synthetic_heldout_count_err": s["count_err"],
            "synthetic_heldout_pixel_iou": s["pixel_iou"]}


def manifest(metrics: dict, data: dict) -> dict:
    import torch

    return {
        "schema_version": 1, "name": NAME, "version": VERSION, "task": "lpem-segmentation",
        "description": "U-Net (base 8, three poolings) predicting particle foreground and centre maps of "
                       "liquid-phase TEM frames; instances by seeded watershed (nanolens_lpem.science.segmentation)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, "height", "width"],
                    "note": "height and width multiples of 8"}],
        "outputs": [{"name": "maps", "dtype": "float32", "shape": ["batch", 2, "height", "width"],
                     "channels": ["foreground_logit", "centre_logit"]}],
        "class_names": ["liquid", "particle"],
        "preprocessing": {"normalise": "flat-field by 8 px block means smoothed 3 blocks, then (x - p1) / (p99 - p1) "
                                       "- 0.5 per frame", "polarity": "dark particles", "multiple": 8},
        "metrics": metrics,
        "training_data": {"sha256": data["sha256"], "n_items": data["n_items"], "source": data["source"]},
        "framework": {"torch": torch.__version__, "onnx_exporter": "dynamo", "unet_base": data.get("base", 8),
                      "steps": data.get("steps")},
    }


def main(argv=None) -> int:
    from nanolens_lpem.training import train
    from nanolens_runtime.bundles import write_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("build/lpem-models"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--n-frames", type=int, default=4000)
    ap.add_argument("--reuse", action="store_true", help="bundle the model already trained in --work")
    args = ap.parse_args(argv)
    if not args.reuse:
        train.main(["--out", str(args.work), "--steps", str(args.steps), "--n-frames", str(args.n_frames)])
    metrics = heldout_metrics(args.work / "model.onnx")
    data = json.loads((args.work / "training_data.json").read_text())
    out = write_bundle(BUNDLE_DIR / NAME / VERSION, (args.work / "model.onnx").read_bytes(), manifest(metrics, data))
    print("wrote", out, json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
