"""Rebuild the shipped TEM bundles, ``tem-unet`` and ``tem-ann``, from nothing but seeds.

    python -m nanolens_tem.training.build_default [--work DIR] [--out BUNDLES] [--only NAME]

``tem-unet`` is a chain of training runs, each starting from the previous one's weights
(``CNN_STAGES``): a base-8 U-Net on overlapping spheres with the front-most labels, faceted
crystals added, the deepest-sphere labels, a size-weighted loss, more images, then widened to
base 12. Its detection table and radius spread are calibrated on their own seeds, it is
evaluated (``nanolens_tem.evaluation.evaluate``: the metrics in the manifest) and bundled.
``tem-ann`` is one run. Each stage's folder under ``--work`` keeps its checkpoint and the cached
training images, so an interrupted build resumes where it stopped.

On 2 CPU cores the full build takes about 4 hours (the U-Net stages about 3 h, calibration
10 min, evaluation 20 min, ``tem-ann`` 10 min). Floating-point training is not bit-stable across
CPUs: a rebuild gives an equivalent bundle (same architecture, calibration procedure and
training data hash; metrics within their spread), not the same bytes. ``--scale`` shrinks every
count (images, steps, epochs, calibration and evaluation sets) to check the plumbing in minutes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nanolens_tem.bundles import BUNDLES
from nanolens_tem.evaluation import evaluate
from nanolens_tem.training import ann_train, bundle, calibrate, cnn_train

CNN_VERSION = "1.5.0"
ANN_VERSION = "1.0.0"


@dataclass(frozen=True)
class Stage:
    """One ``cnn_train`` run; ``counts`` are the arguments that ``--scale`` shrinks."""

    name: str
    counts: dict[str, int]
    options: dict[str, object] = field(default_factory=dict)


_FACETED = {"n_faceted": 300}
_LATER = {"batch": 6, "crop": 176, "lr": 1e-3, "threads": 2, "faceted_weight": 0.4}
CNN_STAGES: tuple[Stage, ...] = (
    Stage("w01-front", {"n_images": 500, "steps": 1500},
          {"batch": 6, "crop": 160, "base": 8, "sphere_overlaps": "front"}),
    Stage("w02-front", {"n_images": 500, "steps": 2500},
          {"batch": 6, "crop": 176, "base": 8, "sphere_overlaps": "front"}),
    *(Stage(f"w0{i}-faceted", {"n_images": 500, "steps": 1500, **_FACETED},
            {**_LATER, "base": 8, "sphere_overlaps": "front"}) for i in (3, 4)),
    *(Stage(f"w0{i}-deepest", {"n_images": 500, "steps": 1500, **_FACETED}, {**_LATER, "base": 8})
      for i in (5, 6, 7, 8)),
    Stage("w09-size-weighted", {"n_images": 500, "steps": 3000, **_FACETED},
          {**_LATER, "base": 8, "instance_weight": 4, "seed": 1}),
    Stage("w10-more-images", {"n_images": 2000, "steps": 3000, **_FACETED},
          {**_LATER, "base": 8, "instance_weight": 4, "seed": 2}),
    Stage("w11-widened", {"n_images": 2000, "steps": 3000, **_FACETED},
          {**_LATER, "base": 12, "instance_weight": 4, "seed": 3}),
)
CALIBRATION = {"n_images": 150, "n_detection_spheres": 300, "n_detection_faceted": 200}
EVALUATION = {"n_synthetic": 500, "n_small": 500, "n_faceted": 500}
ANN = {"n_images": 600, "epochs": 300}


def _flags(values: dict[str, object]) -> list[str]:
    return [part for k, v in values.items() for part in (f"--{k.replace('_', '-')}", str(v))]


def _scaled(counts: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(2, round(v * scale)) for k, v in counts.items()}


def _carry_caches(previous: Path, folder: Path) -> None:
    """The next stage trains on the same generated images: copy the previous stage's caches."""
    for cache in previous.glob("*.npz"):
        if not (folder / cache.name).exists():
            shutil.copy2(cache, folder / cache.name)


def cnn_plan(work: Path, scale: float = 1.0, stages: tuple[Stage, ...] = CNN_STAGES) -> list[tuple[Path, list[str]]]:
    """Each stage's folder and ``cnn_train`` arguments: every stage starts from the weights of
    the one before it."""
    plan, previous = [], None
    for stage in stages:
        folder = work / stage.name
        argv = ["--out", str(folder), *_flags(_scaled(stage.counts, scale)), *_flags(stage.options)]
        if previous is not None:
            argv += ["--init", str(previous / "model.pt")]
        plan.append((folder, argv))
        previous = folder
    return plan


def build_cnn(work: Path, out: Path, scale: float = 1.0, real_data: bool = True,
              stages: tuple[Stage, ...] = CNN_STAGES, calibrated: bool = True) -> Path:
    """Train ``stages`` (skipping finished ones), calibrate (unless ``calibrated`` is false: a
    barely trained network finds too few particles to fit), evaluate and write the ``tem-unet``
    bundle to ``out``; returns the bundle folder."""
    previous: Path | None = None
    for folder, argv in cnn_plan(work, scale, stages):
        if not (folder / "model.pt").exists():
            folder.mkdir(parents=True, exist_ok=True)
            if previous is not None:
                _carry_caches(previous, folder)
            print(f"== {folder.name}: cnn_train {' '.join(argv)}", flush=True)
            cnn_train.main(argv)
        previous = folder
    final = previous
    if calibrated and not (final / "calibration.json").exists():
        calibrate.main(["--onnx", str(final / "model.onnx"), "--out", str(final / "calibration.json"),
                        "--threads", "2", *_flags(_scaled(CALIBRATION, scale))])
    unevaluated = work / "tem-unet-unevaluated"
    bundle.main(["--work", str(final), "--version", CNN_VERSION, "--out", str(unevaluated)])
    evaluation = work / "evaluation"
    evaluate.main(["--methods", "cnn", "--cnn", str(unevaluated), "--out", str(evaluation),
                   *_flags(_scaled(EVALUATION, scale)), *([] if real_data else ["--no-real"])])
    target = out / "tem-unet" / CNN_VERSION
    bundle.main(["--work", str(final), "--eval", str(evaluation / "tem_eval.json"), "--version", CNN_VERSION,
                 "--out", str(target)])
    return target


def build_ann(work: Path, out: Path, scale: float = 1.0) -> Path:
    """Train ``tem-ann`` and write its bundle to ``out``; returns the bundle folder."""
    folder = work / "ann"
    ann_train.main(["--out", str(folder), "--version", ANN_VERSION, *_flags(_scaled(ANN, scale))])
    target = out / "tem-ann" / ANN_VERSION
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copy2(folder / name, target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/tem-models"),
                        help="work folder: checkpoints and cached training images (resumable)")
    parser.add_argument("--out", type=Path, default=BUNDLES, help="bundles folder (default: the shipped ones)")
    parser.add_argument("--only", choices=("tem-unet", "tem-ann"), help="rebuild one of the two")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shrink every count by this factor (a plumbing check; the bundles are not fit to ship)")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale {args.scale}: expected a factor in (0, 1]")
    if args.only != "tem-ann":
        print("wrote", build_cnn(args.work, args.out, args.scale, real_data=args.scale == 1))
    if args.only != "tem-unet":
        print("wrote", build_ann(args.work, args.out, args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
