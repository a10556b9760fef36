"""Export of the trained classifier to a single-file ONNX graph, checked against torch."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch

from nanolens_spectra.training.model import SpectraClassifier, ood_scores, predict_proba, single_threaded

INPUT_NAME = "spectra"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT_NAME = "ood_score"
PARITY_ATOL = 1e-5
# Q is a small difference of float32 vectors: compared relative to max(1, |score|).
OOD_PARITY_RTOL = 1e-3


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, deprecations) for this call."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_opset(onnx_bytes: bytes) -> int:
    """The default-domain opset version of a serialised ONNX model."""
    model = onnx.load_from_string(onnx_bytes)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def run_onnx(onnx_bytes: bytes, spectra: np.ndarray, output: str = OUTPUT_NAME) -> np.ndarray:
    """One output (default: the probabilities) of the ONNX graph with onnxruntime on the CPU (one thread)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    return session.run([output], {INPUT_NAME: np.ascontiguousarray(spectra, dtype=np.float32)})[0]


def check_parity(onnx_bytes: bytes, model: SpectraClassifier, spectra: np.ndarray,
                 atol: float = PARITY_ATOL) -> float:
    """Largest absolute difference between onnxruntime and torch probabilities on ``spectra``;
    raises RuntimeError above ``atol``."""
    got = run_onnx(onnx_bytes, spectra)
    want = predict_proba(model, spectra)
    if got.shape != want.shape or got.dtype != np.float32:
        raise RuntimeError(f"ONNX output {got.shape} {got.dtype} does not match torch {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if diff > atol:
        raise RuntimeError(f"ONNX and torch probabilities differ by {diff:.3g} (> {atol:g})")
    got_ood, want_ood = run_onnx(onnx_bytes, spectra, OOD_OUTPUT_NAME), ood_scores(model, spectra)
    ood_diff = float(np.max(np.abs(got_ood - want_ood) / np.maximum(1.0, np.abs(want_ood))))
    if got_ood.shape != (len(spectra),) or ood_diff > OOD_PARITY_RTOL:
        raise RuntimeError(f"ONNX and torch out-of-domain scores differ by {ood_diff:.3g} "
                           f"(relative, > {OOD_PARITY_RTOL:g})")
    return diff


def _probe_inputs(model: SpectraClassifier, n: int = 16, seed: int = 0) -> np.ndarray:
    """Deterministic test spectra for the parity check: positive, spectrum-like magnitudes."""
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 50.0, size=(n, model.n_features)).astype(np.float32)


def export_onnx(model: SpectraClassifier, sample: np.ndarray | None = None) -> bytes:
    """Serialised ONNX model (one file, weights inside) with input ``spectra`` [batch, C]
    float32 and outputs ``probabilities`` [batch, K] and ``ood_score`` [batch] float32, batch dynamic.

    Uses the torch.export-based (dynamo) exporter. The result is checked with onnxruntime
    against torch within ``PARITY_ATOL`` on ``sample`` (preprocessed spectra, if given) and on
    synthetic probe spectra, including a batch of one.
    """
    model = model.eval()
    example = torch.from_numpy(_probe_inputs(model, n=4))
    with _quiet_exporter(), single_threaded():
        program = torch.onnx.export(
            model, (example,), dynamo=True, external_data=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, OOD_OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    onnx_bytes = program.model_proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    probes = [_probe_inputs(model), _probe_inputs(model, n=1, seed=1)]
    if sample is not None:
        probes.append(np.asarray(sample, dtype=np.float32))
    for probe in probes:
        check_parity(onnx_bytes, model, probe)
    return onnx_bytes
