"""ONNX sessions: CUDA when present, CPU otherwise; runs in a thread pool; deadlines stop runs.

onnxruntime releases the GIL while it runs, so a small thread pool keeps the event
loop free. A run whose caller gives up (deadline or cancel) is terminated through
``RunOptions.terminate`` rather than left to burn a core.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from nanolens_runtime.bundles import ModelBundle
from nanolens_runtime.errors import DeadlineExceeded, InvalidModelBundle

log = logging.getLogger("nanolens.inference")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
                 "int64": np.int64, "int32": np.int32, "uint8": np.uint8}


def select_providers(preference: str = "auto") -> list[str]:
    """Execution providers for ``auto`` (CUDA if this onnxruntime build has it), ``cpu`` or ``cuda``."""
    available = ort.get_available_providers()
    if preference == "cpu":
        return [CPU]
    if preference == "cuda":
        if CUDA not in available:
            raise RuntimeError(f"NANOLENS_ORT_PROVIDERS=cuda but onnxruntime offers only {available}")
        return [CUDA, CPU]
    if preference != "auto":
        raise ValueError(f"NANOLENS_ORT_PROVIDERS must be auto, cpu or cuda, not {preference!r}")
    return [CUDA, CPU] if CUDA in available else [CPU]


class OnnxModel:
    """A verified bundle with its onnxruntime session."""

    def __init__(self, bundle: ModelBundle, providers: list[str], intra_op_threads: int = 1):
        self.bundle = bundle
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InvalidModelBundle(f"{bundle.path}: onnxruntime cannot load the graph ({exc})") from exc
        self.provider = self.session.get_providers()[0]
        declared = [spec["name"] for spec in bundle.manifest["inputs"]]
        actual = [i.name for i in self.session.get_inputs()]
        if declared != actual:
            raise InvalidModelBundle(f"{bundle.path}: manifest inputs {declared} but graph inputs {actual}")
        self.input_specs = bundle.manifest["inputs"]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def key(self) -> str:
        return f"{self.bundle.name}:{self.bundle.version}"

    def run(self, inputs: dict[str, np.ndarray], run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        return self.session.run(self.output_names, inputs, run_options)

    def warm_up(self) -> None:
        """One run on zeros of the declared shape, so the first request is not slow. Free (symbolic
        or -1) dimensions become 1 for the batch and 64 elsewhere (e.g. image sides of a U-Net)."""
        feeds = {}
        for spec in self.input_specs:
            shape = [int(d) if isinstance(d, int) and d > 0 else (1 if i == 0 else 64)
                     for i, d in enumerate(spec["shape"])]
            feeds[spec["name"]] = np.zeros(shape, dtype=_NUMPY_DTYPES[spec["dtype"]])
        self.run(feeds)


class InferencePool:
    """The thread pool in which model runs happen."""

    def __init__(self, threads: int = 0):
        self.threads = threads or os.cpu_count() or 1
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="onnx")

    async def run(self, model: OnnxModel, inputs: dict[str, np.ndarray],
                  deadline_s: float | None = None) -> list[np.ndarray]:
        """Run in the pool; past ``deadline_s`` seconds, or when cancelled, the run is terminated."""
        options = ort.RunOptions()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, model.run, inputs, options)
        try:
            return await asyncio.wait_for(future, deadline_s)
        except TimeoutError as exc:
            options.terminate = True
            raise DeadlineExceeded(f"model {model.key} did not finish within the deadline") from exc
        except asyncio.CancelledError:
            options.terminate = True
            raise

    async def call(self, fn, *args):
        """Run any blocking function (e.g. numpy preprocessing) in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
