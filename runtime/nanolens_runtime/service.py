"""The shape of a domain service: what it is (:class:`DomainService`), the pipeline it runs
(:class:`Pipeline`: preprocess -> predict -> postprocess, in the spirit of KServe's ``Model``)
and the servicer that converts messages and delegates (:class:`DomainServicer`).

A domain package ``nanolens_<domain>/`` holds ``science/`` (what serving runs), ``service.py``
(pipeline and servicer), ``bundles/`` (shipped models), ``training/`` and ``evaluation/``.
Only ``science/`` and ``service.py`` are serving code: their sha256, with the versions of the
libraries they lean on, is part of every stored result's identity (:func:`serving_code_sha256`).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

from nanolens.common.v1 import common_pb2
from nanolens_runtime import metrics
from nanolens_runtime.errors import DeadlineExceeded
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.version import SERVICE_VERSION

SERVING_CODE = ("science", "service.py")  # in a domain package: what serving runs
#: shared science packages (source root ``science/``): part of the serving code of the domains
#: whose serving code imports them, and of no other
SHARED_SCIENCE = ("nanolens_micrographs",)


def serving_files(package: Path) -> list[Path]:
    """The serving code of a domain package: every module of ``science/`` and ``service.py``."""
    files = []
    for part in SERVING_CODE:
        path = package / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise FileNotFoundError(f"{package} lacks serving code {[str(m) for m in missing] or list(SERVING_CODE)}")
    return files


def shared_science(files: list[Path]) -> dict[str, Path]:
    """The shared science packages (``SHARED_SCIENCE``) that ``files`` import, each with its folder."""
    imported = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    found = {}
    for name in sorted(imported & set(SHARED_SCIENCE)):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"shared science package {name} is imported by serving code but not installed")
        found[name] = Path(next(iter(spec.submodule_search_locations)))
    return found


def serving_code_sha256(package: Path, libraries: tuple[str, ...] = ()) -> str:
    """sha256 of a domain package's serving code (paths and bytes of :func:`serving_files` and of the
    shared science packages they import, :func:`shared_science`) and of the installed versions of
    ``libraries``. A stored result is reused only while it is unchanged: an edit to training or
    evaluation code keeps every stored result; one to ``science/`` or to a shared science package the
    domain imports does not."""
    digest = hashlib.sha256()
    files = serving_files(package)
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name, root in shared_science(files).items():
        for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
            digest.update(f"{name}/{path.relative_to(root).as_posix()}".encode() + b"\0" + path.read_bytes() + b"\0")
    for library in libraries:
        digest.update(f"{library} {importlib.metadata.version(library)}\n".encode())
    return digest.hexdigest()


_serving_code_sha256_once = cache(serving_code_sha256)


@dataclass(frozen=True)
class DomainService:
    """What a domain service is: its name, the tasks of the models it serves, its default model,
    its package folder (``bundles/`` inside it is shipped), and the libraries whose versions are
    part of its serving code."""

    name: str
    tasks: tuple[str, ...]
    default_model: str
    package: Path
    libraries: tuple[str, ...] = ("numpy",)

    @property
    def bundles(self) -> Path:
        return self.package / "bundles"

    def code_sha256(self) -> str:
        """:func:`serving_code_sha256` of this service, computed once per process (it is on every
        response's path; the code does not change while the process runs)."""
        return _serving_code_sha256_once(self.package, self.libraries)

    def provenance(self, model: OnnxModel | None, timer: metrics.StageTimer, *, name: str = "", version: str = "",
                   sha256: str = "", provider: str = "") -> common_pb2.Provenance:
        """What ran, for the result: the model (or, for a method without one, ``name``/``version``/
        ``sha256`` of its code), this service and its serving code, and the stage times."""
        return common_pb2.Provenance(
            model_name=model.bundle.name if model else name,
            model_version=model.bundle.version if model else version or SERVICE_VERSION,
            model_sha256=model.bundle.sha256 if model else sha256,
            service_name=self.name, service_version=SERVICE_VERSION, code_sha256=self.code_sha256(),
            execution_provider=model.provider if model else provider,
            timings=[common_pb2.StageTiming(stage=s, seconds=t) for s, t in timer.timings])


class Pipeline:
    """A domain's science between decoded inputs and results, free of gRPC types.

    Subclasses supply :meth:`predict` and, where they have them, :meth:`preprocess` and
    :meth:`postprocess`; all three are blocking and run in the inference pool. :meth:`run` times
    them as the stages ``preprocess``, ``inference`` and ``postprocess`` and stops at the deadline
    (``run_options.terminate`` ends onnxruntime runs that are still going).
    """

    def __init__(self, service: DomainService, registry: ModelRegistry, pool: InferencePool):
        self.service = service
        self.registry = registry
        self.pool = pool

    def preprocess(self, inputs: Any, model: OnnxModel | None) -> Any:
        return inputs

    def predict(self, features: Any, model: OnnxModel | None, run_options: ort.RunOptions) -> Any:
        raise NotImplementedError

    def postprocess(self, outputs: Any, inputs: Any, model: OnnxModel | None) -> Any:
        return outputs

    async def run(self, inputs: Any, model: OnnxModel | None, timer: metrics.StageTimer,
                  deadline_s: float | None = None) -> Any:
        features = inputs
        if type(self).preprocess is not Pipeline.preprocess:  # no pool round trip for a stage a domain lacks
            with timer.stage("preprocess"):
                features = await self.pool.call(self.preprocess, inputs, model)
        run_options = ort.RunOptions()
        with timer.stage("inference"):
            try:
                outputs = await asyncio.wait_for(self.pool.call(self.predict, features, model, run_options),
                                                 deadline_s)
            except (TimeoutError, asyncio.CancelledError) as exc:
                run_options.terminate = True
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise DeadlineExceeded(f"{self.service.name} did not finish within the deadline") from exc
        if type(self).postprocess is Pipeline.postprocess:
            return outputs
        with timer.stage("postprocess"):
            return await self.pool.call(self.postprocess, outputs, inputs, model)

    async def model(self, name: str = "", version: str = "") -> OnnxModel:
        """A loaded model without I/O, else fetched from the models bucket off the event loop."""
        loaded = self.registry.loaded(name, version)
        if loaded is not None:
            return loaded
        return await asyncio.to_thread(self.registry.get, name, version)

    async def catalogue(self) -> list[common_pb2.ModelInfo]:
        """The models this service can run (a domain adds entries, such as model-free methods)."""
        await asyncio.to_thread(self.registry.refresh)
        return self.registry.infos(self.service.code_sha256())


class DomainServicer:
    """Mixed into a generated servicer: ``ListModels`` from the pipeline's catalogue. The RPC
    methods themselves convert messages and delegate to the pipeline."""

    list_response: type  # the domain's ListModelsResponse

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    async def ListModels(self, request, context):
        return self.list_response(models=await self.pipeline.catalogue())
