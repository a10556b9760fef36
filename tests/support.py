"""Test helpers: tiny real ONNX bundles (no torch needed) and data-folder lookup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nanolens_runtime.bundles import write_bundle

REPO = Path(__file__).resolve().parent.parent
# The shared test stack's object and upload limit: small, so that "too big" is quick to show.
LIMIT_MB = 16


def run_module(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in the repository, as a user runs it; fails the test (with the end of
    stderr) unless it exits 0."""
    run = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def data_dir() -> Path:
    return Path(os.environ.get("NANOLENS_DATA", REPO.parent / "shared" / "data"))


def linear_softmax_onnx(n_in: int, n_classes: int, seed: int = 0, repeats: int = 0) -> bytes:
    """softmax(x @ W) with a fixed random W; ``repeats`` extra n_in x n_in matmuls make it slow."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "spectra"
    for i in range(repeats):
        square = numpy_helper.from_array((rng.standard_normal((n_in, n_in)) / np.sqrt(n_in)).astype(np.float32),
                                         f"S{i}")
        inits.append(square)
        nodes.append(helper.make_node("MatMul", [current, f"S{i}"], [f"h{i}"]))
        current = f"h{i}"
    inits.append(numpy_helper.from_array(rng.standard_normal((n_in, n_classes)).astype(np.float32), "W"))
    nodes += [helper.make_node("MatMul", [current, "W"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "linear_softmax",
        [helper.make_tensor_value_info("spectra", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_bundle(root: Path, name: str = "toy", version: str = "1", task: str = "spectra-classification",
                n_in: int = 16, classes=("a", "b", "c"), seed: int = 0, repeats: int = 0,
                preprocessing: dict | None = None) -> Path:
    manifest = {
        "schema_version": 1, "name": name, "version": version, "task": task,
        "description": "test bundle", "created": "2026-01-01T00:00:00Z",
        "inputs": [{"name": "spectra", "dtype": "float32", "shape": [-1, n_in]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, len(classes)]}],
        "class_names": list(classes),
        "preprocessing": preprocessing if preprocessing is not None else {},
        "metrics": {"cv_accuracy_mean": 0.5}, "training_data": {"sha256": "0" * 64, "n_items": 0, "source": "test"},
        "framework": {"onnx_opset": 18},
    }
    return write_bundle(root / name / version, linear_softmax_onnx(n_in, len(classes), seed, repeats), manifest)


def renamed_bundle(src: Path, root: Path, name: str, version: str, **changes) -> Path:
    """A bundle's graph under another name/version in ``root/name/version`` (what a model
    fine-tuned and registered by a facility looks like to the platform); ``changes`` replace
    top-level manifest entries."""
    import json

    from nanolens_runtime.bundles import ModelBundle

    bundle = ModelBundle.load(src)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "graph"}
    return write_bundle(root / name / version, Path(bundle.onnx_path).read_bytes(),
                        json.loads(json.dumps(dict(manifest, name=name, version=version, **changes))))
