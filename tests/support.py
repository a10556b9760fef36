"""Test helpers: tiny real ONNX bundles (no torch needed) and data-folder lookup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nanolens_runtime.bundles import write_bundle

REPO = Path(__file__).resolve().parent.parent
# The shared test stack's object and upload limit: small, so that "too big" is quick to show.
LIMIT_MB = 16


def require_train_extra() -> None:
    """Skip the calling test module, with the reason, where the train extra (torch, scikit-learn) is
    not installed: the suite collects and runs without it."""
    for module in ("torch", "sklearn"):
        pytest.importorskip(module, reason="needs the train extra (pip install -e '.[train]')")


def upload(gateway, data: bytes, filename: str, key: str = ""):
    """Bytes into the raw-data bucket through a gateway stub's ``Upload``, in 1 MiB chunks; the
    stored object's reference."""
    from nanolens.gateway.v1 import gateway_pb2

    def parts():
        yield gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(filename=filename, key=key))
        for i in range(0, len(data), 1 << 20):
            yield gateway_pb2.UploadRequest(chunk=data[i:i + (1 << 20)])

    return gateway.Upload(parts(), timeout=60).object


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


def graph_shape(path: Path) -> tuple[list[str], list[tuple[str, tuple[int, ...]]]]:
    """An ONNX graph's architecture: its op types in order and its initializers' names and shapes."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [n.op_type for n in graph.node], sorted((i.name, tuple(i.dims)) for i in graph.initializer)


def assert_equivalent_bundles(rebuilt, shipped, predict, *, max_mean_abs: float, min_agreement: float,
                              metric: str | None = None, metric_spread: str | None = None) -> None:
    """A rebuilt bundle is the shipped one up to floating-point training noise: same task, classes,
    inputs, outputs, preprocessing and architecture; ``predict(bundle) -> (N, K) scores`` on a
    fixed probe set agree (mean absolute difference at most ``max_mean_abs``, the same argmax on
    at least ``min_agreement`` of the rows); the recorded ``metric`` within twice its recorded
    spread (``metric_spread``, e.g. the CV standard deviation)."""
    a, b = rebuilt.manifest, shipped.manifest
    for key in ("task", "class_names", "inputs", "outputs", "preprocessing"):
        assert a.get(key) == b.get(key), f"{key} differs: rebuilt {a.get(key)!r}, shipped {b.get(key)!r}"
    assert graph_shape(rebuilt.onnx_path) == graph_shape(shipped.onnx_path), "the architecture differs"
    new, old = np.asarray(predict(rebuilt)), np.asarray(predict(shipped))
    assert new.shape == old.shape
    mean_abs = float(np.abs(new - old).mean())
    agreement = float((new.argmax(axis=1) == old.argmax(axis=1)).mean())
    assert mean_abs <= max_mean_abs and agreement >= min_agreement, (mean_abs, agreement)
    if metric:
        spread = float(b["metrics"][metric_spread])
        assert abs(a["metrics"][metric] - b["metrics"][metric]) <= 2 * spread + 1e-9, (a["metrics"][metric],
                                                                                          b["metrics"][metric], spread)


# --- PromQL: which metrics does an expression read? ---------------------------------------------

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "Inf",
    "NaN",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, label matchers, ranges, grouping clauses,
    function names and Grafana $variables removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"'(?:\\.|[^'\\])*'", "''", s)
    s = re.sub(r"`[^`]*`", "``", s)
    s = re.sub(r"\{[^{}]*\}", "{}", s)
    s = re.sub(r"\[[^\[\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = match.group(0)
        if s[match.end() :].lstrip().startswith("("):  # a function call
            continue
        if token in _PROMQL_WORDS:
            continue
        names.add(token)
    return names
