"""onnxruntime in a thread pool: a deadline terminates the run instead of letting it burn a core."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nanolens_runtime.bundles import ModelBundle
from nanolens_runtime.errors import DeadlineExceeded
from nanolens_runtime.inference import InferencePool, OnnxModel, select_providers
from support import make_bundle


def test_provider_choice():
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    assert select_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_providers("tpu")


async def test_deadline_terminates_a_long_run(tmp_path):
    model = OnnxModel(ModelBundle.load(make_bundle(tmp_path, n_in=512, repeats=40)), ["CPUExecutionProvider"])
    pool = InferencePool(threads=1)
    x = {"spectra": np.ones((2048, 512), np.float32)}
    start = time.perf_counter()
    await pool.run(model, x)
    full = time.perf_counter() - start
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await pool.run(model, x, deadline_s=full / 10)
    # The single pool thread is free again long before a full run could have finished.
    await pool.call(lambda: None)
    assert time.perf_counter() - start < full * 0.7, f"run was not terminated (full run {full:.2f} s)"
    pool.shutdown()
