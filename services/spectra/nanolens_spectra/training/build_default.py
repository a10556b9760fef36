"""Rebuild the shipped default model bundle, byte for byte.

    python -m nanolens_spectra.training.build_default [--out DIR]

Generates the seeded synthetic DNA-SWCNT training set (``N_PER_CLASS`` spectra per endosome
class), cross-validates and trains the reference classifier, exports it to ONNX and writes
``nanolens_spectra/bundles/swcnt-endosome/1/``. Every input is fixed (seed, sizes, parameters,
``CREATED``), and torch and BLAS run single-threaded with deterministic kernels, so running it
again on the same platform and versions gives files with the same sha256.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanolens_runtime.bundles import sha256_file
from nanolens_spectra.bundles import DEFAULT_BUNDLE_NAME, DEFAULT_BUNDLE_VERSION, default_bundle_path
from nanolens_spectra.science.preprocessing import SWCNT_REGIONS_CM1, PreprocessParams
from nanolens_spectra.synthetic.swcnt import generate_spectra
from nanolens_spectra.training.bundle import deterministic, train_bundle_report
from nanolens_spectra.training.data import LabelledDataset
from nanolens_spectra.training.model import TrainParams

SEED = 2021
N_PER_CLASS = 300
CREATED = "2025-01-01T00:00:00+00:00"
DESCRIPTION = (
    "Endosome class (early endosome, late endosome, lysosome) of DNA-wrapped SWCNTs from one Raman "
    "spectrum, after Gravely & Roxbury, ACS Nano 2021: L2 normalisation, PCA to 95 % variance, MLP "
    "2x25 ReLU, softmax. Trained and cross-validated on synthetic spectra only "
    "(nanolens_spectra.synthetic.swcnt); not validated on measured spectra."
)
PREPROCESSING = PreprocessParams(regions=SWCNT_REGIONS_CM1, min_snr=5.0)
TRAINING = TrainParams()


def synthetic_dataset(n_per_class: int = N_PER_CLASS, seed: int = SEED) -> LabelledDataset:
    """The seeded synthetic training set as a LabelledDataset."""
    syn = generate_spectra(n_per_class, seed)
    return LabelledDataset(
        spectra=syn.spectra, labels=syn.labels, axis=syn.axis, class_names=syn.class_names,
        source=f"synthetic: nanolens_spectra.synthetic.swcnt.generate_spectra(n_per_class={n_per_class}, "
               f"seed={seed})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_bundle_path(),
                        help="bundle directory (default: the shipped bundle)")
    args = parser.parse_args(argv)
    with deterministic(SEED):
        result = train_bundle_report(
            synthetic_dataset(), args.out, DEFAULT_BUNDLE_NAME, DEFAULT_BUNDLE_VERSION, SEED,
            DESCRIPTION, CREATED, PREPROCESSING, TRAINING,
        )
    r = result.report
    print(f"{DEFAULT_BUNDLE_NAME}/{DEFAULT_BUNDLE_VERSION}: {r.n_items} spectra, {r.folds}-fold CV accuracy "
          f"{100 * r.accuracy_mean:.1f} +- {100 * r.accuracy_sd:.1f} % (logistic regression "
          f"{100 * r.baseline_accuracy_mean:.1f} +- {100 * r.baseline_accuracy_sd:.1f} %), "
          f"{result.manifest['metrics']['n_pca_components']} PCA components, "
          f"{result.n_dropped} degenerate spectra dropped")
    for name in ("model.onnx", "manifest.json"):
        print(f"  {sha256_file(result.path / name)}  {result.path / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
