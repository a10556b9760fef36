"""Train a spectra classifier bundle on your own labelled spectra (``nanolens spectra train``).

    nanolens spectra train DATA [--labels FILE] [--out DIR] --name NAME [--register]
        [--version 1] [--seed 0] [--folds 10] [--no-despike] [--no-baseline]
        [--axis START:STOP:NUM] [--region LOW:HIGH ...] [--min-snr 0]

DATA is a CSV (``label`` column + wavenumber columns, or spectra only plus ``--labels``) or an
NPZ (``spectra``, ``labels``, ``axis``), see ``nanolens_spectra.training.data``. The model axis
defaults to the data's own axis. The bundle (model.onnx + manifest.json) is written to
``DIR/NAME/VERSION``, ready to upload to the models bucket.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nanolens_spectra.science.preprocessing import PreprocessParams

if TYPE_CHECKING:  # torch loads only when training runs, not when the CLI builds its parser
    from nanolens_spectra.training.bundle import TrainingResult


def _pair(text: str, n: int, what: str) -> tuple[float, ...]:
    parts = text.split(":")
    if len(parts) != n:
        raise argparse.ArgumentTypeError(f"{what} must look like {':'.join(['X'] * n)}, got {text!r}")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} has a non-number") from None


def build_params(args: argparse.Namespace, axis) -> PreprocessParams:
    """PreprocessParams from the command line; the model axis defaults to the data's axis."""
    if args.axis:
        start, stop, num = _pair(args.axis, 3, "--axis")
        axis_kw = {"axis_start": start, "axis_stop": stop, "axis_num": int(num)}
    else:
        axis_kw = {"axis_values": tuple(float(v) for v in sorted(axis))}
    return PreprocessParams(
        **axis_kw, regions=tuple(_pair(r, 2, "--region") for r in args.region),
        despike=not args.no_despike, baseline=not args.no_baseline, min_snr=args.min_snr,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nanolens spectra train``."""
    parser.add_argument("data", type=Path, help="CSV (label column + wavenumber columns) or NPZ")
    parser.add_argument("--labels", type=Path, default=None, help="labels file for a spectra-only CSV")
    parser.add_argument("--out", type=Path, default=Path("bundles"),
                        help="root folder; bundle goes to OUT/NAME/VERSION")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--description", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--axis", default=None, help="model axis START:STOP:NUM in cm^-1 (default: data axis)")
    parser.add_argument("--region", action="append", default=[], help="region of interest LOW:HIGH (repeat)")
    parser.add_argument("--no-despike", action="store_true", help="data are already free of cosmic rays")
    parser.add_argument("--no-baseline", action="store_true", help="data are already baseline-corrected")
    parser.add_argument("--min-snr", type=float, default=0.0, help="drop spectra below this SNR (0: keep all)")


def run(args: argparse.Namespace) -> TrainingResult:
    """Cross-validate, train and write the bundle; prints the report. Raises ValueError on bad data."""
    from nanolens_spectra.training.bundle import deterministic, train_bundle_report
    from nanolens_spectra.training.data import load_labelled_dataset

    ds = load_labelled_dataset(args.data, args.labels, min_per_class=args.folds)
    params = build_params(args, ds.axis)
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    description = args.description or f"Spectra classifier trained on {args.data.name}"
    print(f"training {args.name}:{args.version} on {len(ds.labels)} spectra ({args.folds}-fold CV first) ...",
          file=sys.stderr)
    with deterministic(args.seed):
        result = train_bundle_report(ds, args.out / args.name / args.version, args.name, args.version,
                                     args.seed, description, created, params, folds=args.folds)
    r = result.report
    print(f"{args.name}/{args.version}: {r.n_items} spectra, {len(r.class_names)} classes, {r.folds}-fold CV "
          f"accuracy {100 * r.accuracy_mean:.1f} +- {100 * r.accuracy_sd:.1f} % (logistic regression "
          f"{100 * r.baseline_accuracy_mean:.1f} +- {100 * r.baseline_accuracy_sd:.1f} %, majority class "
          f"{100 * r.chance_accuracy:.1f} %) -> {result.path}")
    return result
