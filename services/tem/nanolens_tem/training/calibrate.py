"""Fit a CNN's ``radius_spread`` and its detection model on calibration images from the
training distribution.

``python -m nanolens_tem.training.calibrate --onnx W/model.onnx --out W/calibration.json``

A network trained with an L1 loss on the radius map pulls each particle's size towards the sizes
around it: within an image, the predicted log diameters spread less than the true ones, so the
GSD comes out low. On synthetic images drawn like the training images (seeds of their own inside
the training split, none trained on), the found particles (IoU > 0.5) are compared with their true
diameters, both centred on their image's mean log diameter. The factor is the ratio of the two
spreads, ``sqrt(sum true^2 / sum predicted^2)``: it makes the spread of the sizes, the GSD, right,
which is what the size distribution needs. :mod:`nanolens_tem.training.bundle` writes it into the
manifest's ``postprocessing``, where :class:`nanolens_tem.science.cnn.CnnSegmenter` reads it.

Then, with that factor, the detection model of :mod:`nanolens_tem.science.occlusion`: the recall of true
particles by relative size and agglomerate overlap, on sphere and faceted calibration images in
the 60/40 proportion in which the shipped networks saw them in training.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from nanolens_tem.evaluation.splits import TRAIN_SEED0
from nanolens_tem.science.occlusion import DetectionModel, truth_context

#: calibration seeds: inside the training split, away from the sphere (0..) and faceted
#: (500 000..) training images
CALIB_SEED0 = TRAIN_SEED0 + 800_000
#: faceted calibration seeds (the faceted training images start at 500 000)
CALIB_FACETED_SEED0 = TRAIN_SEED0 + 900_000


def matched_log_sizes(segmenter, images) -> tuple[np.ndarray, np.ndarray]:
    """Per found particle: (true, predicted) log diameter, each centred on its image's mean over
    the found particles. ``images``: SyntheticImage objects; radius sizing, spread 1."""
    from nanolens_tem.evaluation.metrics import iou_matrix

    xs, ys = [], []
    for s in images:
        seg = segmenter.segment(s.image, radius_spread=1.0)
        iou = iou_matrix(s.labels, seg.labels)
        if iou.size == 0:
            continue
        g_ids = np.unique(s.labels)
        g_ids = g_ids[g_ids > 0]
        best = iou.argmax(1)
        hit = iou[np.arange(len(g_ids)), best] > 0.5
        if hit.sum() < 2:
            continue
        t = np.log(s.diameters[g_ids[hit] - 1])
        p = np.log(seg.diameters[best[hit]])
        xs.append(t - t.mean())
        ys.append(p - p.mean())
    return (np.concatenate(xs), np.concatenate(ys)) if xs else (np.zeros(0), np.zeros(0))


def fit_spread(true_c: np.ndarray, pred_c: np.ndarray) -> dict:
    """The spread factor and the numbers it rests on, from centred log sizes."""
    if len(true_c) < 10:
        raise ValueError(f"only {len(true_c)} matched particles: too few to fit a spread factor")
    slope = float(np.sum(true_c * pred_c) / np.sum(true_c**2))
    return {"radius_spread": float(np.sqrt(np.sum(true_c**2) / np.sum(pred_c**2))),
            "slope_pred_on_true": slope,
            "residual_sd": float(np.std(pred_c - slope * true_c)),
            "n_particles": int(len(true_c))}


def fit_detection(segmenter, images, min_per_cell: int = 20) -> DetectionModel:
    """The detection model (:mod:`nanolens_tem.science.occlusion`) of ``segmenter`` on ``images``
    (SyntheticImage objects), with the segmenter's own sizing."""
    from nanolens_tem.evaluation.metrics import found_truth

    rows = []
    for s in images:
        seg = segmenter.segment(s.image)
        found = found_truth(s.labels, seg.labels, len(s.diameters))
        rows.append(truth_context(s.labels, s.diameters, found, seg.labels, seg.diameters))
    return DetectionModel.fit(rows, min_per_cell)


def main(argv: list[str] | None = None) -> int:
    from nanolens_tem.science.cnn import CnnSegmenter
    from nanolens_tem.training.cnn_train import faceted_training_images, training_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="calibration JSON (bundle.py reads it from --work)")
    ap.add_argument("--n-images", type=int, default=150, help="sphere images for the radius spread")
    ap.add_argument("--n-detection-spheres", type=int, default=300, help="sphere images for the detection model")
    ap.add_argument("--n-detection-faceted", type=int, default=200, help="faceted images for the detection model")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    seg = CnnSegmenter.from_onnx(args.onnx, threads=args.threads)
    fit = fit_spread(*matched_log_sizes(seg, training_images(args.n_images, CALIB_SEED0)))
    fit.update(n_images=args.n_images, seeds=f"{CALIB_SEED0}..{CALIB_SEED0 + args.n_images - 1}",
               images="nanolens_tem.training.cnn_train.train_params() with per-image dose/PSF/texture variation")
    seg.radius_spread = fit["radius_spread"]
    images = itertools.chain(training_images(args.n_detection_spheres, CALIB_SEED0),
                             faceted_training_images(args.n_detection_faceted, CALIB_FACETED_SEED0))
    fit["detection"] = fit_detection(seg, images).to_json()
    fit["detection"]["images"] = (
        f"{args.n_detection_spheres} sphere images (seeds {CALIB_SEED0}..), {args.n_detection_faceted} faceted "
        f"(training_images / faceted_training_images, seeds {CALIB_FACETED_SEED0}..)")
    args.out.write_text(json.dumps(fit, indent=2))
    print(json.dumps(fit, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
