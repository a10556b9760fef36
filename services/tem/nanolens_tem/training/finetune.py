"""Fine-tuning the TEM U-Net on real images with instance masks, and its cross-validated score.

``python -m nanolens_tem.training.finetune --init model.pt --folds 3 --out DIR``

Real images are resampled by :func:`nanolens_tem.science.cnn.auto_scale` (as at inference), their masks
turned into targets with :func:`~nanolens_tem.training.cnn_train.targets_from_instances`, and
the synthetic-trained network is trained further on a mix of real crops and synthetic crops (so
that it does not forget the agglomerate case). With ``--folds k`` the real images are split into
``k`` folds, stratified by subset; each fold is scored by a model fine-tuned on the other folds
only, so no image is ever scored by a model that saw it. ``--all`` fine-tunes on every image
(a model for local use: the data's licence does not allow shipping it). ``--score-only`` scores
the fold models an earlier run left in ``--out`` again (e.g. after the evaluation changed).
``--n-train n --draw d`` fine-tunes each fold model on a seeded draw of only ``n`` of its
training images (the learning curve in docs/tem.md); ``--exclude-train TEXT`` leaves images whose
name contains TEXT out of fine-tuning, while they are still scored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize

from nanolens_tem.science.cnn import TARGET_RADIUS, auto_scale, normalise
from nanolens_tem.training.cnn_train import UNet, export_onnx, targets_from_instances, train


def real_item(img: np.ndarray, gt: np.ndarray, target_radius: float = TARGET_RADIUS):
    """(x (1, h, w), targets (4, h, w), factor) of a real image resampled to the training scale."""
    f = auto_scale(img, target_radius=target_radius)
    h, w = img.shape
    nh, nw = max(16, round(h * f)), max(16, round(w * f))
    x = normalise(img)
    if f != 1.0:
        x = resize(x, (nh, nw), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
        gt = resize(gt, (nh, nw), order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
    return x[None], targets_from_instances(gt), f


def _pad_stack(xs, ys, size):
    """Pad (reflect x, zero targets) to at least ``size`` and stack."""
    X, Y = [], []
    for x, y in zip(xs, ys, strict=True):
        ph, pw = max(0, size - x.shape[1]), max(0, size - x.shape[2])
        X.append(np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect"))
        Y.append(np.pad(y, ((0, 0), (0, ph), (0, pw))))
    return X, Y


def finetune(init: Path, real_x, real_y, syn_x, syn_y, *, steps: int, base: int, crop: int = 160,
             real_fraction: float = 0.7, seed: int = 0) -> UNet:
    """Continue training from ``init`` on real + synthetic crops (``real_fraction`` of samples real)."""
    model = UNet(base)
    model.load_state_dict(torch.load(init))
    rx, ry = _pad_stack(real_x, real_y, crop)
    x = rx + list(syn_x)
    y = ry + list(syn_y)
    w = np.concatenate([np.full(len(rx), real_fraction / len(rx)),
                        np.full(len(syn_x), (1 - real_fraction) / len(syn_x))])
    train(model, x, y, steps=steps, crop=crop, lr=1e-3, seed=seed, sample_weights=w)
    return model



def folds_by_subset(subsets: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each image: the images of each subset dealt out in turn, so every fold holds each
    subset in proportion."""
    fold = np.zeros(len(subsets), int)
    for s in np.unique(subsets):
        idx = np.flatnonzero(subsets == s)
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def training_subset(train_idx: np.ndarray, subsets: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of the images ``train_idx``, drawn (seeded) from each subset in its share of them,
    at least one of each: the learning curve's smaller training sets."""
    if not 0 < n <= len(train_idx):
        raise ValueError(f"--n-train {n} must be 1..{len(train_idx)} (the images outside the scored fold)")
    kinds, counts = np.unique(subsets[train_idx], return_counts=True)
    if n < len(kinds):
        raise ValueError(f"--n-train {n} is fewer than the {len(kinds)} subsets it must hold")
    share = np.maximum(1, np.floor(n * counts / counts.sum()).astype(int))
    while share.sum() < n:  # the rounding's remainder to the subsets furthest below their share
        share[np.argmax(n * counts / counts.sum() - share)] += 1
    while share.sum() > n:
        share[np.argmax(share)] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(train_idx[subsets[train_idx] == kind], size=m, replace=False)
              for kind, m in zip(kinds, share, strict=True)]
    return np.sort(np.concatenate(picked))


def main(argv=None) -> int:
    from nanolens_tem.evaluation.data import gold_instances, gold_items, read_gray
    from nanolens_tem.evaluation.evaluate import REAL_VARIANTS, evaluate_real
    from nanolens_tem.science.cnn import CnnSegmenter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", type=Path, help="synthetic-trained state dict (model.pt)")
    ap.add_argument("--synthetic", type=Path, help="cnn_train cache synthetic_N.npz")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--target-radius", type=float, default=TARGET_RADIUS)
    ap.add_argument("--score-only", action="store_true", help="score the fold models already in --out")
    ap.add_argument("--tta", action="store_true", help="score with test-time augmentation too (cnn_finetuned_tta)")
    ap.add_argument("--n-train", type=int, default=0,
                    help="fine-tune each fold on only this many of its training images (a learning curve); "
                         "0: all of them")
    ap.add_argument("--exclude-train", default="", metavar="TEXT",
                    help="leave images whose file name contains TEXT out of fine-tuning (they are still scored)")
    ap.add_argument("--draw", type=int, default=0,
                    help="which draw of the --n-train images (its seed is the fold + 1000 x draw)")
    args = ap.parse_args(argv)
    if not args.score_only and not (args.init and args.synthetic):
        ap.error("--init and --synthetic are needed to fine-tune (all but --score-only)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    items = gold_items()
    # training targets from the mask with bridges cut (plain labelling merges chains of particles)
    if not args.score_only:
        data = [real_item(read_gray(i), gold_instances(m, cut_bridges=2), args.target_radius) for _, i, m in items]
        z = np.load(args.synthetic)
        syn_x, syn_y = z["x"][:200], z["y"][:200]
    subsets = np.array([s for s, _, _ in items])
    fold = folds_by_subset(subsets, args.folds)
    # which images each fold model saw; a rescoring keeps what the training run recorded
    previous = args.out / "cv_results.json"
    trained_on = json.loads(previous.read_text()).get("trained_on", {}) if args.score_only and previous.exists() else {}
    results = []
    folds = [None] if args.all else range(args.folds)
    for k in folds:
        name = "all" if k is None else f"fold{k}"
        if args.score_only:
            onnx_bytes = (args.out / f"{name}.onnx").read_bytes()
        else:
            train_idx = np.arange(len(items)) if k is None else np.flatnonzero(fold != k)
            if args.exclude_train:
                train_idx = np.array([i for i in train_idx if args.exclude_train not in items[i][1].name], int)
                if not len(train_idx):
                    ap.error(f"--exclude-train {args.exclude_train!r} leaves {name} no image to fine-tune on")
            if args.n_train:
                train_idx = training_subset(train_idx, subsets, args.n_train, seed=(k or 0) + 1000 * args.draw)
            trained_on[name] = [items[i][1].name for i in train_idx]
            model = finetune(args.init, [data[i][0] for i in train_idx], [data[i][1] for i in train_idx],
                             syn_x, syn_y, steps=args.steps, base=args.base, seed=k or 0)
            onnx_bytes = export_onnx(model)
            (args.out / f"{name}.onnx").write_bytes(onnx_bytes)
        if k is None:   # local model on all real images: a bundle outside the repository
            from nanolens_runtime.bundles import write_bundle
            from nanolens_tem.training.cnn_train import manifest

            info = {"sha256": "", "n_items": len(items), "source": "synthetic model fine-tuned on the real gold masks "
                    "(Yao et al., Nanoscale 2022; no licence: internal use only)"}
            write_bundle(args.out / "bundle", onnx_bytes, manifest("tem-unet-gold", "1.0.0", {}, info, args.base,
                                                                   args.target_radius))
            continue
        seg = CnnSegmenter.from_onnx(onnx_bytes, target_radius=args.target_radius)
        test = [items[i] for i in np.flatnonzero(fold == k)]
        methods = {"cnn_finetuned": lambda im, dark_particles=True, sizing="area", _s=seg: _s.segment(
            im, dark_particles=dark_particles, diameter="area")}
        if args.tta:
            methods["cnn_finetuned_tta"] = lambda im, dark_particles=True, sizing="area", _s=seg: _s.segment(
                im, dark_particles=dark_particles, tta=True, diameter="area")
        results.append([evaluate_real(methods, test, cut_bridges=c, min_area=a) for c, a in REAL_VARIANTS])
    if results:
        (args.out / "cv_results.json").write_text(json.dumps(
            {"folds": results, "fold_of_item": fold.tolist(), "trained_on": trained_on},
            indent=2))
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
