"""10-fold CV of the reference spectra pipeline on measured (non-SWCNT) spectra.

    python -m nanolens_spectra.training.evaluate_real [--data DIR] [--out results.json]

No measured DNA-SWCNT spectra are available, so the reference pipeline (L2 normalisation ->
PCA 95 % -> MLP 2 x 25 ReLU -> softmax) is checked on two public labelled sets instead, each
beside a logistic regression on the same folds and the majority-class rate:

(a) coffee: 60 ATR-FTIR spectra of coffee from 3 origins (chemotools 0.5.0, MIT). The file's
    column headers are channel indices 0..1840, not wavenumbers, so the axis is the index.
(b) ramanbiolib: Raman spectra of biomolecules (ramanbiolib 1.0.0.post5, data ODbL) grouped by
    the top level of the metadata ``type`` (``Lipids/Sterols`` -> ``Lipids``); types with
    fewer than 10 spectra (one per fold) are dropped and listed. Many molecules have 2-4
    spectra (other lasers or sources), so it is scored twice: with plain stratified folds (the
    reference protocol) and with folds grouped by molecule (no molecule in both train and test).

Both sets are already preprocessed by their publishers (ramanbiolib: smoothed, airPLS baseline
removal, min-max normalised; coffee: absorbance with a near-zero baseline), so spike removal
and baseline correction are switched off and the spectra enter the model on their own axis.

``DIR`` defaults to $NANOLENS_DATA, else ``<repo>/../shared/data``. The data never enter the
repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanolens_spectra.evaluation.data import CHEMOTOOLS_DIR, RAMANBIOLIB_DIR, read_ramanbiolib
from nanolens_spectra.evaluation.data import data_root as default_data_dir
from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess
from nanolens_spectra.training.bundle import deterministic
from nanolens_spectra.training.cv import CVReport, cross_validate
from nanolens_spectra.training.data import (
    LabelledDataset,
    encode_labels,
    load_labelled_dataset,
    validate_dataset,
)
from nanolens_spectra.training.model import TrainParams

SEED = 0
FOLDS = 10


def native_axis_params(axis: np.ndarray) -> PreprocessParams:
    """Preprocessing for already-corrected data: keep the native axis, no despike, no baseline."""
    return PreprocessParams(axis_start=float(axis[0]), axis_stop=float(axis[-1]), axis_num=int(axis.size),
                            despike=False, baseline=False)


def coffee_dataset(data_dir: Path) -> LabelledDataset:
    """The 60 chemotools coffee ATR-FTIR spectra with their 3 origin labels."""
    base = Path(data_dir) / CHEMOTOOLS_DIR
    return load_labelled_dataset(base / "coffee_spectra.csv", base / "coffee_labels.csv", min_per_class=FOLDS)


def ramanbiolib_dataset(data_dir: Path, min_per_class: int = FOLDS) -> tuple[
        LabelledDataset, dict[str, int], np.ndarray]:
    """ramanbiolib spectra labelled by top-level molecule type. Returns the dataset, the types
    dropped for having fewer than ``min_per_class`` spectra (name -> count), and the molecule
    (``component``) of every kept spectrum: many molecules have 2-4 spectra, which must stay
    in one fold for an honest score."""
    raw, meta = read_ramanbiolib(data_dir)
    labels = [row["type"].split("/")[0].strip() for row in meta]
    molecules = [row["component"].strip().lower() for row in meta]
    counts = Counter(labels)
    dropped = {k: v for k, v in sorted(counts.items()) if v < min_per_class}
    keep = np.array([lab not in dropped for lab in labels])
    y, names = encode_labels(np.array(labels)[keep])
    ds = LabelledDataset(spectra=raw.spectra[keep], labels=y, axis=raw.axis, class_names=names,
                         source=f"{RAMANBIOLIB_DIR} (type, top level)")
    return validate_dataset(ds, min_per_class), dropped, np.array(molecules)[keep]


@dataclass(frozen=True)
class Evaluation:
    name: str
    dataset: LabelledDataset
    params: PreprocessParams
    report: CVReport
    notes: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.dataset.source, "n_spectra": self.dataset.n_items,
                "n_channels": int(self.dataset.axis.size), "class_counts": self.dataset.class_counts(),
                "preprocessing": self.params.to_dict(), "notes": self.notes,
                "cross_validation": self.report.to_dict()}


def evaluate(name: str, ds: LabelledDataset, notes: str = "", folds: int = FOLDS, seed: int = SEED,
             train: TrainParams | None = None, groups: np.ndarray | None = None) -> Evaluation:
    """CV of the reference pipeline and the logistic baseline on ``ds`` (native axis); with
    ``groups``, each group stays within one fold."""
    params = native_axis_params(ds.axis)
    x = preprocess(ds.spectra, ds.axis, params)
    report = cross_validate(x, ds.labels, folds=folds, seed=seed, params=train, class_names=ds.class_names,
                            groups=groups)
    return Evaluation(name=name, dataset=ds, params=params, report=report, notes=notes)


def format_table(results: list[Evaluation]) -> str:
    """Plain-text table: set, N, classes, PCA components, accuracies (mean +- sd over folds)."""
    head = (f"{'set':<21} {'N':>4} {'K':>2} {'PCs':>5}  {'PCA+MLP (%)':>13}  {'logistic (%)':>13}  "
            f"{'majority (%)':>12}")
    lines = [head, "-" * len(head)]
    for e in results:
        r = e.report
        lines.append(
            f"{e.name:<21} {r.n_items:>4} {len(r.class_names):>2} {np.mean(r.n_components):>5.1f}  "
            f"{100 * r.accuracy_mean:>6.1f} +- {100 * r.accuracy_sd:>4.1f}  "
            f"{100 * r.baseline_accuracy_mean:>6.1f} +- {100 * r.baseline_accuracy_sd:>4.1f}  "
            f"{100 * r.chance_accuracy:>12.1f}"
        )
    return "\n".join(lines)


def run(data_dir: Path, folds: int = FOLDS, seed: int = SEED) -> list[Evaluation]:
    """Both evaluations; raises FileNotFoundError if the data folder is missing."""
    data_dir = Path(data_dir)
    if not (data_dir / "spectra").is_dir():
        raise FileNotFoundError(f"{data_dir / 'spectra'} not found (set --data or NANOLENS_DATA)")
    coffee = coffee_dataset(data_dir)
    bio, dropped, molecules = ramanbiolib_dataset(data_dir, folds)
    bio_note = (f"Raman 450-1800 cm^-1; no despike, no baseline; dropped types with < {folds} spectra: "
                + ", ".join(f"{k} ({v})" for k, v in dropped.items()))
    n_mol = len(set(molecules.tolist()))
    return [
        evaluate("coffee", coffee, "ATR-FTIR, axis = channel index; no despike, no baseline", folds, seed),
        evaluate("ramanbiolib", bio, bio_note + "; stratified folds (a molecule's repeat spectra may "
                 "fall in train and test)", folds, seed),
        evaluate("ramanbiolib/molecule", bio, bio_note + f"; grouped folds: each of the {n_mol} molecules "
                 "in one fold", folds, seed, groups=molecules),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default $NANOLENS_DATA "
                        "or <repo>/../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    data_dir = args.data or default_data_dir()
    try:
        with deterministic(args.seed):
            results = run(data_dir, args.folds, args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    for e in results:
        print(f"{e.name}: {e.dataset.class_counts()}; {e.notes}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"folds": args.folds, "seed": args.seed, "data_dir": str(data_dir),
                   "results": [e.to_dict() for e in results]}
        args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
