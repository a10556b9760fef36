"""Train, evaluate, export and package a spectra classifier as a NanoLens model bundle."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from nanolens_runtime.bundles import write_bundle
from nanolens_spectra.science.preprocessing import PreprocessParams, degenerate_mask, preprocess
from nanolens_spectra.training.cv import CVReport, cross_validate
from nanolens_spectra.training.data import LabelledDataset, validate_dataset
from nanolens_spectra.training.export import INPUT_NAME, OOD_OUTPUT_NAME, OUTPUT_NAME, export_onnx, onnx_opset
from nanolens_spectra.training.model import TrainParams, fit
from nanolens_spectra.training.ood import calibrate

TASK = "spectra-classification"
SCHEMA_VERSION = 1


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Make torch training bit-reproducible on this machine for the duration of the block: one
    thread for torch and for the BLAS libraries, deterministic kernels, seeded global
    generators. The previous torch settings are restored afterwards (this also runs inside
    test sessions shared with other code)."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    np_state, py_state = np.random.get_state(), random.getstate()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        with threadpool_limits(limits=1), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)
        np.random.set_state(np_state)
        random.setstate(py_state)


@dataclass(frozen=True)
class TrainingResult:
    """What ``train_bundle`` did: where the bundle is, the CV report, what was dropped."""

    path: Path
    report: CVReport
    manifest: dict[str, Any]
    n_dropped: int


def prepare_features(ds: LabelledDataset, params: PreprocessParams) -> tuple[np.ndarray, np.ndarray, int]:
    """Preprocessed model inputs and labels, with degenerate spectra (if ``params.min_snr`` > 0)
    dropped; returns (features, labels, number dropped)."""
    x = preprocess(ds.spectra, ds.axis, params)
    if params.min_snr > 0:
        keep = ~degenerate_mask(x, params.min_snr)
        return x[keep], ds.labels[keep], int((~keep).sum())
    return x, ds.labels, 0


def build_manifest(*, name: str, version: str, description: str, created: str, ds: LabelledDataset,
                   preprocessing: PreprocessParams, train: TrainParams, seed: int, report: CVReport,
                   n_features: int, n_components: int, n_dropped: int, opset: int,
                   out_of_domain: dict[str, Any]) -> dict[str, Any]:
    """The bundle manifest (see nanolens_runtime.bundles for the required keys)."""
    metrics = report.metrics()
    metrics.update({"n_dropped_degenerate": n_dropped, "n_pca_components": n_components,
                    "n_features": n_features})
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "task": TASK,
        "description": description,
        "created": created,
        "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": [-1, n_features]}],
        "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, len(ds.class_names)]},
                    {"name": OOD_OUTPUT_NAME, "dtype": "float32", "shape": [-1]}],
        "class_names": list(ds.class_names),
        "preprocessing": preprocessing.to_dict(),
        "metrics": metrics,
        "out_of_domain": out_of_domain,
        "confusion_matrix": [list(row) for row in report.confusion],
        "cross_validation": report.to_dict(),
        "training": {**train.to_dict(), "seed": seed},
        "training_data": {"sha256": ds.sha256(), "n_items": ds.n_items, "source": ds.source,
                          "class_counts": ds.class_counts()},
        "framework": {"torch": torch.__version__.split("+")[0], "onnx_opset": opset},
    }


def train_bundle(dataset: LabelledDataset, out_dir: str | Path, name: str, version: str, seed: int,
                 description: str, created: str, preprocessing: PreprocessParams | None = None,
                 train: TrainParams | None = None, folds: int = 10) -> Path:
    """Cross-validate, fit on all data, export to ONNX and write ``out_dir`` as a bundle
    (model.onnx + manifest.json). ``created`` is an ISO timestamp, passed in so that a rebuild
    can be byte-identical. Returns ``out_dir``."""
    return train_bundle_report(dataset, out_dir, name, version, seed, description, created,
                               preprocessing, train, folds).path


def train_bundle_report(dataset: LabelledDataset, out_dir: str | Path, name: str, version: str,
                        seed: int, description: str, created: str,
                        preprocessing: PreprocessParams | None = None, train: TrainParams | None = None,
                        folds: int = 10) -> TrainingResult:
    """``train_bundle`` that also returns the CV report and the manifest."""
    pre = preprocessing or PreprocessParams()
    params = train or TrainParams()
    validate_dataset(dataset, folds)
    x, y, n_dropped = prepare_features(dataset, pre)
    model = fit(x, y, dataset.class_names, params, seed=seed)
    # The fold models keep the full model's PCA size: T^2 and Q of held-out spectra then calibrate
    # the served model's own statistics (with the 95 % rule a fold keeps fewer components).
    report = cross_validate(x, y, folds=folds, seed=seed, params=params, class_names=dataset.class_names,
                            n_components=model.n_components)
    ood = calibrate(report.out_of_fold_ood, f"out-of-fold spectra of the {folds}-fold cross-validation of the "
                    f"training data ({dataset.source}), each scored by the fold model (with the served "
                    f"model's {model.n_components} PCA components) that did not train on it")
    model.set_ood_calibration(ood["t2_limit"], ood["q_limit"], ood["threshold"])
    onnx_bytes = export_onnx(model, sample=x[:64])
    manifest = build_manifest(
        name=name, version=version, description=description, created=created, ds=dataset,
        preprocessing=pre, train=params, seed=seed, report=report, n_features=model.n_features,
        n_components=model.n_components, n_dropped=n_dropped, opset=onnx_opset(onnx_bytes), out_of_domain=ood,
    )
    path = write_bundle(Path(out_dir), onnx_bytes, manifest)
    return TrainingResult(path=path, report=report, manifest=manifest, n_dropped=n_dropped)
