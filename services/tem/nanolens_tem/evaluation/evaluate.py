"""Evaluation of every TEM sizing method against ground truth.

``python -m nanolens_tem.evaluation.evaluate --n-synthetic 500 --out DIR [--cnn BUNDLE_DIR|model.onnx] [--ann DIR]``

1. **Synthetic** (held-out test seeds, :func:`nanolens_tem.evaluation.splits.eval_params`): relative error of
   the geometric mean diameter (GMD) and geometric standard deviation (GSD) of the detected
   primary particles against *all* true particles (as in Frei & Kruis 2018), pooled over the
   images and per image; instance F1 at IoU 0.5 against the ground-truth instance labels (each
   particle owns the part of its disc the image gives it, :func:`nanolens_tem.synthetic.agglomerates.render`).
2. **Real** (Chen lab gold tetrahedra / nanoprisms with manual masks; instances are the
   4-connected components of the mask): instance F1 at IoU 0.5, count error, and GMD/GSD errors of
   equivalent-circle diameters, per subset and overall.

Results go to ``DIR/tem_eval.json`` and ``DIR/tem_eval.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nanolens_tem.evaluation.metrics import (
    drop_small,
    equivalent_diameters,
    found_truth,
    instance_f1,
    match_instances,
    psd_errors,
)
from nanolens_tem.evaluation.splits import TEST_SEED0, eval_params, eval_params_faceted, eval_params_small
from nanolens_tem.science.baselines import hough_segment, watershed_segment
from nanolens_tem.science.segmentation import Segmentation
from nanolens_tem.synthetic.agglomerates import generate
from nanolens_tem.synthetic.faceted import generate_faceted

Method = Callable[..., Segmentation]


def build_methods(cnn: Path | None = None, ann: Path | None = None, cnn_real: Path | None = None) -> dict:
    """Name -> ``f(image, dark_particles=True, sizing="own"|"area") -> Segmentation``."""

    def wrap(fn):
        def f(image, dark_particles=True, sizing="own"):
            seg = fn(image, dark_particles=dark_particles)
            if sizing == "area":
                seg.diameters = equivalent_diameters(seg.labels)
            return seg
        return f

    methods = {"watershed": wrap(watershed_segment), "hough": wrap(hough_segment)}
    if ann is not None:
        from nanolens_tem.science.ann import AnnSizer

        sizer = AnnSizer.load(ann)
        methods["ann"] = lambda image, dark_particles=True, sizing="own": sizer.segment(
            image, dark_particles=dark_particles)
    if cnn is not None:
        from nanolens_tem.science.cnn import CnnSegmenter

        # a bundle folder brings its manifest's pre- and post-processing; a bare ONNX file the defaults
        seg = CnnSegmenter.from_bundle(Path(cnn)) if Path(cnn).is_dir() else CnnSegmenter.from_onnx(Path(cnn))
        methods["cnn"] = lambda image, dark_particles=True, sizing="own": seg.segment(
            image, dark_particles=dark_particles, diameter="radius" if sizing == "own" else "area")
        # test-time augmentation (8 views): ask for it with --methods cnn_tta
        methods["cnn_tta"] = lambda image, dark_particles=True, sizing="own": seg.segment(
            image, dark_particles=dark_particles, tta=True, diameter="radius" if sizing == "own" else "area")
    return methods


def n_labels(labels: np.ndarray) -> int:
    """Number of instances (distinct non-zero labels) in a label image."""
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))


#: methods that size agglomerates without locating particles (no instance F1)
NO_INSTANCES = ("ann",)
#: bins of the fraction of its disc a particle owns in the labels (``visible_area`` / disc area), for
#: the recall table
VISIBLE_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.01)


def evaluate_synthetic(methods: dict, n: int, seed0: int = TEST_SEED0, shape=(256, 256),
                       condition: str = "default") -> dict:
    """Per-method pooled and per-image GMD/GSD errors and F1 on ``n`` held-out synthetic images.

    ``condition``: ``"default"`` (1-40 particles per agglomerate), ``"small"`` (1-5, the
    range of the reference ANN) or ``"faceted"`` (crystals on a film, :mod:`nanolens_tem.synthetic.faceted`).
    """
    makers = {"default": lambda k: generate(k, eval_params(shape)),
              "small": lambda k: generate(k, eval_params_small(shape)),
              "faceted": lambda k: generate_faceted(k, eval_params_faceted(shape))}
    if condition not in makers:
        raise ValueError(f"unknown condition {condition!r}; use one of {', '.join(makers)}")
    make = makers[condition]
    acc = {m: {"pred": [], "weight": [], "true": [], "tp": 0, "fp": 0, "fn": 0, "per_image": [], "time": 0.0,
               "found": [], "weighted": False} for m in methods}
    n_true, visible = 0, []
    for i in range(n):
        s = make(seed0 + i)
        n_true += len(s.diameters)
        visible.append(s.visible_area / (np.pi * s.diameters**2 / 4))
        for name, fn in methods.items():
            t = time.perf_counter()
            seg = fn(s.image)
            a = acc[name]
            a["time"] += time.perf_counter() - t
            weights = np.ones(len(seg.diameters)) if seg.weights is None else seg.weights
            a["weighted"] |= seg.weights is not None
            a["pred"].append(seg.diameters)
            a["weight"].append(weights)
            a["true"].append(s.diameters)
            found = found_truth(s.labels, seg.labels, len(s.diameters))
            tp = int(found.sum())  # the same count as match_instances, from the one IoU matrix
            a["tp"] += tp
            a["fp"] += n_labels(seg.labels) - tp
            a["fn"] += n_labels(s.labels) - tp
            a["found"].append(found)
            if len(seg.diameters) >= 2:
                a["per_image"].append(psd_errors(seg.diameters, s.diameters, weights))
    visible = np.concatenate(visible)
    bins = np.digitize(visible, VISIBLE_BINS[1:-1])
    out = {"n_images": n, "n_true_particles": n_true, "image_shape": list(shape), "condition": condition,
           "visible_bins": list(VISIBLE_BINS), "n_per_visible_bin": np.bincount(bins, minlength=5).tolist(),
           "methods": {}}
    for name, a in acc.items():
        found = np.concatenate(a["found"])
        pred, true = np.concatenate(a["pred"]), np.concatenate(a["true"])
        eg, es = psd_errors(pred, true, np.concatenate(a["weight"]))
        pi = np.asarray(a["per_image"]).reshape(-1, 2)
        out["methods"][name] = res = {
            "gmd_err": eg, "gsd_err": es,
            "gmd_err_per_image_mean": float(pi[:, 0].mean()), "gmd_err_per_image_sd": float(pi[:, 0].std()),
            "gsd_err_per_image_mean": float(pi[:, 1].mean()), "gsd_err_per_image_sd": float(pi[:, 1].std()),
            "gmd_abs_err_per_image_mean": float(np.abs(pi[:, 0]).mean()),
            "gsd_abs_err_per_image_mean": float(np.abs(pi[:, 1]).mean()),
            "n_images_scored": int(len(pi)),
            "f1_iou50": None if name in NO_INSTANCES else instance_f1(a["tp"], a["fp"], a["fn"]),
            "n_detected": int(sum(len(d) for d in a["pred"])),
            "s_per_image": a["time"] / n,
            # share of true particles found (IoU > 0.5), by the share of its disc each one owns in the labels
            "recall_by_visible_fraction": None if name in NO_INSTANCES else
            [float(found[bins == b].mean()) if (bins == b).any() else None for b in range(5)],
        }
        if a["weighted"]:  # beside the occlusion-corrected errors, those of the found particles alone
            res["gmd_err_found_only"], res["gsd_err_found_only"] = psd_errors(pred, true)
            res["estimated_count_err"] = float(np.concatenate(a["weight"]).sum() / n_true - 1)
    return out


#: ground-truth variants of the real evaluation: (cut_bridges, min_area)
REAL_VARIANTS = ((0, 0), (2, 0), (2, 20))


def evaluate_real(methods: dict, items=None, cut_bridges: int = 0, min_area: int = 0) -> dict:
    """Instance F1 (IoU 0.5), count error and ECD-based GMD/GSD error on the real gold masks.

    ``cut_bridges``: ground-truth variant, see :func:`nanolens_tem.evaluation.data.gold_instances`.
    ``min_area``: ground-truth *and* predicted instances under this many px are left out (the
    masks hold specks of a few px, far below any particle; 0 scores everything).
    """
    from nanolens_tem.evaluation.data import gold_instances, gold_items, read_gray

    items = gold_items() if items is None else items
    subsets = sorted({s for s, _, _ in items})
    loaded = [(s, read_gray(i), drop_small(gold_instances(m, cut_bridges), min_area)) for s, i, m in items]
    out = {"n_images": len(items), "cut_bridges": cut_bridges, "min_area": min_area, "methods": {}}
    for name, fn in methods.items():
        res = {}
        per = {s: {"tp": 0, "fp": 0, "fn": 0, "pred": [], "true": [], "cnt": [], "n_gt": 0, "n_pred": 0}
               for s in subsets}
        t0 = time.perf_counter()
        for subset, img, gt in loaded:
            pred = drop_small(fn(img, dark_particles=True, sizing="area").labels, min_area)
            tp, fp, fn_ = match_instances(gt, pred)
            a = per[subset]
            a["tp"], a["fp"], a["fn"] = a["tp"] + tp, a["fp"] + fp, a["fn"] + fn_
            d_true, d_pred = equivalent_diameters(gt), equivalent_diameters(pred)
            a["true"].append(d_true)
            a["pred"].append(d_pred)
            a["n_gt"] += len(d_true)
            a["n_pred"] += len(d_pred)
            a["cnt"].append((len(d_pred) - len(d_true)) / max(len(d_true), 1))
        for key, group in [(s, [s]) for s in subsets] + [("all", subsets)]:
            tp = sum(per[s]["tp"] for s in group)
            fp = sum(per[s]["fp"] for s in group)
            fn_ = sum(per[s]["fn"] for s in group)
            n_gt = sum(per[s]["n_gt"] for s in group)
            n_pred = sum(per[s]["n_pred"] for s in group)
            cnt = np.concatenate([per[s]["cnt"] for s in group])
            eg, es = psd_errors(np.concatenate([np.concatenate(per[s]["pred"]) for s in group]),
                                np.concatenate([np.concatenate(per[s]["true"]) for s in group]))
            f1 = None if name in NO_INSTANCES else instance_f1(tp, fp, fn_)
            res[key] = {"f1_iou50": f1, "tp": tp, "fp": fp, "fn": fn_, "n_gt": n_gt,
                        "n_pred": n_pred, "count_err": (n_pred - n_gt) / max(n_gt, 1),
                        "count_abs_err_per_image_mean": float(np.abs(cnt).mean()),
                        "gmd_err": eg, "gsd_err": es, "n_images": int(len(cnt))}
        res["s_per_image"] = (time.perf_counter() - t0) / max(len(loaded), 1)
        out["methods"][name] = res
    return out


def _f(v, fmt=".3f"):
    return "n/a" if v is None else format(v, fmt)


def to_markdown(syns: list[dict], reals: list[dict] | dict | None) -> str:
    lines = []
    for syn in syns:
        lines += [f"Synthetic test split, condition `{syn['condition']}`: {syn['n_images']} images "
                  f"{syn['image_shape'][0]}x{syn['image_shape'][1]}, "
                  f"{syn['n_true_particles']} true primary particles.", "",
                  "| method | GMD err (pooled) | GSD err (pooled) | per-image GMD err mean ± sd | "
                  "per-image GSD err mean ± sd | per-image mean abs GMD / GSD err | F1@0.5 | detected | s/image |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, r in syn["methods"].items():
            lines.append(
                f"| {m} | {100 * r['gmd_err']:+.1f} % | {100 * r['gsd_err']:+.1f} % | "
                f"{100 * r['gmd_err_per_image_mean']:+.1f} ± {100 * r['gmd_err_per_image_sd']:.1f} % | "
                f"{100 * r['gsd_err_per_image_mean']:+.1f} ± {100 * r['gsd_err_per_image_sd']:.1f} % | "
                f"{100 * r['gmd_abs_err_per_image_mean']:.1f} / {100 * r['gsd_abs_err_per_image_mean']:.1f} % | "
                f"{_f(r['f1_iou50'])} | {r['n_detected']} | {r['s_per_image']:.3f} |")
        lines.append("")
        for m, r in syn["methods"].items():
            if "gmd_err_found_only" in r:
                lines += [f"`{m}` weights each found particle for the hidden ones like it (occlusion correction, "
                          f"docs/tem.md); the found particles alone: GMD err {100 * r['gmd_err_found_only']:+.1f} %, "
                          f"GSD err {100 * r['gsd_err_found_only']:+.1f} %; the weights' sum against the true count: "
                          f"{100 * r['estimated_count_err']:+.1f} %.", ""]
        edges = syn["visible_bins"]
        head = [f"{edges[b]:.1f}-{min(edges[b + 1], 1.0):.1f} (n={syn['n_per_visible_bin'][b]})" for b in range(5)]
        lines += ["Recall (true particles found at IoU > 0.5) by the share of its disc each particle owns "
                  "in the labels:", "",
                  "| method | " + " | ".join(head) + " |", "|---|" + "---|" * 5]
        for m, r in syn["methods"].items():
            if r.get("recall_by_visible_fraction"):
                lines.append(f"| {m} | " + " | ".join(_f(v, ".2f") for v in r["recall_by_visible_fraction"]) + " |")
        lines.append("")
    for real in [reals] if isinstance(reals, dict) else (reals or []):
        gt = ("4-connected components of the mask" if not real.get("cut_bridges")
              else f"mask bridges up to {2 * real['cut_bridges']} px cut")
        if real.get("min_area"):
            gt += f", instances under {real['min_area']} px left out (GT and predicted)"
        lines += [f"Real gold TEM images with manual masks: {real['n_images']} images; ground truth: {gt}.", "",
                  "| method | subset | images | GT instances | predicted | F1@0.5 | count err | "
                  "mean abs count err / image | GMD err (ECD) | GSD err (ECD) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, res in real["methods"].items():
            for key, r in res.items():
                if key == "s_per_image":
                    continue
                lines.append(f"| {m} | {key} | {r['n_images']} | {r['n_gt']} | {r['n_pred']} | {_f(r['f1_iou50'])} | "
                             f"{100 * r['count_err']:+.1f} % | {100 * r['count_abs_err_per_image_mean']:.1f} % | "
                             f"{100 * r['gmd_err']:+.1f} % | {100 * r['gsd_err']:+.1f} % |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-synthetic", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("bench-output/tem"))
    ap.add_argument("--cnn", type=Path, help="CNN bundle folder or bare ONNX file (default: the newest shipped bundle)")
    ap.add_argument("--ann", type=Path, help="ANN model folder")
    ap.add_argument("--methods", default="", help="comma-separated subset of watershed, hough, ann, cnn, cnn_tta "
                    "(the CNN with test-time augmentation); default: all but cnn_tta")
    ap.add_argument("--n-small", type=int, default=500, help="images of the 1-5 particle condition (0: skip)")
    ap.add_argument("--n-faceted", type=int, default=500, help="images of faceted crystals (0: skip)")
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args(argv)
    from nanolens_tem.bundles import latest_bundle

    cnn = args.cnn or latest_bundle("tem-unet")
    ann = args.ann or latest_bundle("tem-ann")
    methods = build_methods(cnn=cnn, ann=ann)
    methods = {k: v for k, v in methods.items() if k in args.methods.split(",")} if args.methods else \
        {k: v for k, v in methods.items() if k != "cnn_tta"}  # 8 times the CNN's time: only when asked
    args.out.mkdir(parents=True, exist_ok=True)
    syns = []
    if args.n_synthetic:
        syns.append(evaluate_synthetic(methods, args.n_synthetic))
    if args.n_small:
        syns.append(evaluate_synthetic(methods, args.n_small, seed0=TEST_SEED0 + 100_000, condition="small"))
    if args.n_faceted:
        syns.append(evaluate_synthetic(methods, args.n_faceted, seed0=TEST_SEED0 + 200_000, condition="faceted"))
    real = None
    if not args.no_real:
        from nanolens_tem.evaluation.data import gold_dir

        if gold_dir().is_dir():
            real = [evaluate_real(methods, cut_bridges=k, min_area=a) for k, a in REAL_VARIANTS]
        else:
            print(f"real data not found at {gold_dir()}: skipping the real evaluation")
    (args.out / "tem_eval.json").write_text(json.dumps({"synthetic": syns, "real": real}, indent=2))
    md = to_markdown(syns, real)
    (args.out / "tem_eval.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
