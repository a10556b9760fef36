"""The TEM service: primary-particle sizing by one of four methods, and its gRPC servicer.

The science lives in the neighbouring modules (``cnn``, ``ann``, ``baselines``); this module
picks the method, runs it in the inference pool, and measures what it found: particles,
agglomerates and the size distribution.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy
import skimage
from scipy import ndimage as ndi

from nanolens.common.v1 import common_pb2
from nanolens.tem.v1 import tem_pb2, tem_pb2_grpc
from nanolens_runtime import arrays, metrics
from nanolens_runtime.bundles import code_sha256
from nanolens_runtime.enums import enum_words
from nanolens_runtime.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import Servicer
from nanolens_runtime.version import SERVICE_VERSION
from nanolens_tem import baselines
from nanolens_tem.ann import AnnSizer
from nanolens_tem.baselines import Segmentation, hough_segment, watershed_segment
from nanolens_tem.cnn import CnnSegmenter
from nanolens_tem.models import BUNDLES
from nanolens_tem.synthetic import geometric_stats

SERVICE = "tem"
CNN_MODEL, ANN_MODEL = "tem-unet", "tem-ann"
TASKS = ("instance-segmentation", "agglomerate-sizing")
#: the methods that run a model: the task its model must have, and the shipped default model
MODEL_METHODS = {"cnn": (TASKS[0], CNN_MODEL), "ann": (TASKS[1], ANN_MODEL)}
SHIPPED_BUNDLES = BUNDLES
FULL_NAME = tem_pb2.DESCRIPTOR.services_by_name["TemService"].full_name
METHOD_NAMES = {number: word for word, number in enum_words(tem_pb2.Method, "METHOD_").items()}
METHOD_OF_TASK = {task: method for method, (task, _) in MODEL_METHODS.items()}
HISTOGRAM_BINS = 20
BASELINES = ("watershed", "hough")


@cache
def serving_code_sha256() -> str:
    """sha256 of the code between an image and a result, whatever the model: this module and the
    science it calls (the CNN's tiling and scale estimate, the ANN's features, the shared Otsu
    mask, the distribution statistics), with the versions of the libraries they lean on. Every
    catalogue entry carries it, so the gateway recomputes stored results when it changes."""
    from nanolens_tem import ann, cnn, features, synthetic

    modules = (Path(__file__), cnn.__file__, ann.__file__, features.__file__, baselines.__file__, synthetic.__file__)
    return code_sha256(*map(Path, modules), extra=f"scikit-image {skimage.__version__}, scipy {scipy.__version__}")


@cache
def baseline_infos() -> tuple[common_pb2.ModelInfo, ...]:
    """The baselines as catalogue entries. They have no model file, so their sha256 is that of the
    code that runs them (``baselines.py`` and the scikit-image version)."""
    sha = code_sha256(Path(baselines.__file__), extra=f"scikit-image {skimage.__version__}")
    return tuple(common_pb2.ModelInfo(
        name=name, version=SERVICE_VERSION, task=TASKS[0], sha256=sha, code_sha256=serving_code_sha256(),
        description=f"{name} baseline (scikit-image {skimage.__version__}; no model file, sha256 of its code)")
        for name in BASELINES)


@dataclass
class Sizing:
    """What one image gave: instance labels and, per particle, its size and place."""

    method: str
    labels: np.ndarray  # H x W uint16
    diameters_px: np.ndarray  # (K,)
    areas_px: np.ndarray  # (K,)
    centroids: np.ndarray  # (K, 2) row, col
    agglomerate_of: np.ndarray  # (K,) agglomerate id (1-based)
    agglomerates: np.ndarray  # H x W agglomerate labels
    model: OnnxModel | None
    weights: np.ndarray | None = None  # (K,) occlusion weights (nanolens_tem.occlusion); None: all 1


def measure(method: str, image_shape: tuple[int, int], seg: Segmentation, model: OnnxModel | None) -> Sizing:
    """Particles, their agglomerates (8-connected groups of particle pixels) and sizes."""
    labels = np.asarray(seg.labels)
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ResourceExhausted(f"{int(labels.max())} particles do not fit a uint16 label image")
    agglomerates, _ = ndi.label(labels > 0, structure=np.ones((3, 3), bool))
    diameters = np.asarray(seg.diameters, dtype=np.float64)
    centroids = np.asarray(seg.centres, dtype=np.float64).reshape(-1, 2)
    if method == "ann":  # sizes without locations: areas from the predicted diameters
        areas = np.pi * diameters**2 / 4.0
    else:
        areas = np.bincount(labels.ravel(), minlength=len(diameters) + 1)[1:len(diameters) + 1].astype(float)
    rows = np.clip(np.round(centroids[:, 0]).astype(int), 0, image_shape[0] - 1)
    cols = np.clip(np.round(centroids[:, 1]).astype(int), 0, image_shape[1] - 1)
    weights = None if seg.weights is None else np.asarray(seg.weights, dtype=np.float64)
    return Sizing(method, labels.astype(np.uint16), diameters, areas, centroids,
                  agglomerates[rows, cols].astype(np.int32), agglomerates, model, weights)


class TemPipeline:
    def __init__(self, registry: ModelRegistry, pool: InferencePool):
        self.registry = registry
        self.pool = pool
        self._runners: dict[str, CnnSegmenter | AnnSizer] = {}  # per model key, on the registry's sessions

    def _runner(self, model: OnnxModel) -> CnnSegmenter | AnnSizer:
        if model.key not in self._runners:
            if model.bundle.task == MODEL_METHODS["cnn"][0]:
                man = model.bundle.manifest
                self._runners[model.key] = CnnSegmenter.from_session(model.session, man["preprocessing"],
                                                                     man.get("postprocessing"))
            else:
                prep = model.bundle.manifest["preprocessing"]
                self._runners[model.key] = AnnSizer(model.session, np.asarray(prep["feature_mean"], np.float32),
                                                    np.asarray(prep["feature_std"], np.float32))
        return self._runners[model.key]

    def default_method(self) -> str:
        return "cnn" if self.registry.loaded(CNN_MODEL) is not None else "watershed"

    def model_for(self, method: str, name: str = "", version: str = "") -> OnnxModel | None:
        """The model a method runs (None for the baselines): ``name``/``version`` or the method's
        shipped model, newest version. Blocking (it may fetch from the models bucket)."""
        if method not in MODEL_METHODS:
            return None
        task, default = MODEL_METHODS[method]
        model = self.registry.get(name or default, version)
        if model.bundle.task != task:
            raise InvalidArgument(f"model {model.key} has task {model.bundle.task}; method {method} needs a model of "
                                  f"task {task}", field="model.name")
        return model

    def segment(self, image: np.ndarray, method: str, bright: bool, run_options=None,
                model: OnnxModel | None = None, tta: bool = False) -> Sizing:
        """Run one method on one image (blocking: call it in the pool). ``model``: from
        :meth:`model_for` (default: the method's shipped model). ``run_options``
        (onnxruntime.RunOptions) lets the caller terminate the CNN's model runs. ``tta``: the
        CNN's test-time augmentation (:meth:`CnnSegmenter.predict_maps`)."""
        dark = not bright
        if tta and method != "cnn":
            raise InvalidArgument(f"test_time_augmentation applies to the cnn method only, not {method}",
                                  field="test_time_augmentation")
        if method in MODEL_METHODS:
            model = model or self.model_for(method)
            runner = self._runner(model)
            if isinstance(runner, CnnSegmenter):
                seg = dataclasses.replace(runner, run_options=run_options).segment(image, dark_particles=dark, tta=tta)
            else:
                seg = runner.segment(image, dark_particles=dark)
        elif method == "watershed":
            model, seg = None, watershed_segment(image, dark_particles=dark)
        else:
            model, seg = None, hough_segment(image, dark_particles=dark)
        return measure(method, image.shape, seg, model)

    async def analyze(self, image: np.ndarray, method: str, bright: bool, timer: metrics.StageTimer,
                      deadline_s: float | None, model: OnnxModel | None = None, tta: bool = False) -> Sizing:
        run_options = ort.RunOptions()
        with timer.stage("inference"):
            try:
                return await asyncio.wait_for(
                    self.pool.call(self.segment, image, method, bright, run_options, model, tta), deadline_s)
            except (TimeoutError, asyncio.CancelledError) as exc:
                run_options.terminate = True  # the CNN stops at its next tile; the baselines run out
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise DeadlineExceeded(f"{method} did not finish within the deadline") from exc


def particle_weights(sizing: Sizing) -> np.ndarray:
    return np.ones(len(sizing.diameters_px)) if sizing.weights is None else sizing.weights


def distribution(sizing: Sizing, pixel_size_nm: float) -> tem_pb2.Distribution:
    sized = sizing.diameters_px > 0
    d, w = sizing.diameters_px[sized], particle_weights(sizing)[sized]
    gmd, gsd = geometric_stats(d, w) if d.size else (0.0, 0.0)
    scale, unit = (pixel_size_nm, "nm") if pixel_size_nm > 0 else (1.0, "px")
    counts, edges = np.histogram(d * scale, bins=HISTOGRAM_BINS) if d.size else (np.zeros(0, int), np.zeros(0))
    estimated = np.histogram(d * scale, bins=edges, weights=w)[0] if d.size else np.zeros(0)
    return tem_pb2.Distribution(count=int(d.size), gmd_px=gmd, gmd_nm=gmd * pixel_size_nm, gsd=gsd,
                                histogram_edges=edges.tolist(), histogram_counts=counts.tolist(), unit=unit,
                                occlusion_corrected=sizing.weights is not None, estimated_count=float(w.sum()),
                                histogram_estimated_counts=estimated.tolist())


def response(sizing: Sizing, pixel_size_nm: float, timer: metrics.StageTimer) -> tem_pb2.AnalyzeImageResponse:
    particles = [
        tem_pb2.Particle(id=i + 1, diameter_px=float(d), diameter_nm=float(d * pixel_size_nm), area_px=float(a),
                         centroid_row=float(c[0]), centroid_col=float(c[1]), agglomerate_id=int(g), weight=float(w))
        for i, (d, a, c, g, w) in enumerate(zip(sizing.diameters_px, sizing.areas_px, sizing.centroids,
                                                sizing.agglomerate_of, particle_weights(sizing), strict=True))
    ]
    agglomerates = []
    counts = np.bincount(sizing.agglomerate_of, minlength=int(sizing.agglomerates.max(initial=0)) + 1)
    for index, box in enumerate(ndi.find_objects(sizing.agglomerates), start=1):
        if box is not None:
            agglomerates.append(tem_pb2.Agglomerate(
                id=index, particle_count=int(counts[index]), min_row=box[0].start, min_col=box[1].start,
                max_row=box[0].stop, max_col=box[1].stop))
    model = sizing.model
    baseline = {b.name: b for b in baseline_infos()}.get(sizing.method)
    provenance = common_pb2.Provenance(
        model_name=model.bundle.name if model else sizing.method,
        model_version=model.bundle.version if model else SERVICE_VERSION,
        model_sha256=model.bundle.sha256 if model else baseline.sha256 if baseline else "",
        service_name=SERVICE, service_version=SERVICE_VERSION, code_sha256=serving_code_sha256(),
        execution_provider=model.provider if model else "numpy/scikit-image",
        timings=[common_pb2.StageTiming(stage=s, seconds=t) for s, t in timer.timings])
    return tem_pb2.AnalyzeImageResponse(
        method=sizing.method, particles=particles, agglomerates=agglomerates,
        distribution=distribution(sizing, pixel_size_nm), labels=arrays.to_proto(sizing.labels),
        provenance=provenance)


class TemServicer(tem_pb2_grpc.TemServiceServicer):
    def __init__(self, pipeline: TemPipeline):
        self.pipeline = pipeline

    async def AnalyzeImage(self, request, context):
        timer = metrics.StageTimer()
        with timer.stage("decode"):
            image = arrays.from_proto(request.image, "image")
            if image.ndim != 2 or min(image.shape) < 16:
                raise InvalidArgument(f"image must be H x W with sides >= 16, got {list(image.shape)}",
                                      field="image.shape")
            if image.dtype.kind not in "uf" or image.dtype.itemsize > 4:
                raise InvalidArgument(f"image dtype {image.dtype} is not uint8, uint16 or float32",
                                      field="image.dtype")
            arrays.require_micrograph_levels(image, "image")  # the gateway checks this too; callers may not use it
        if request.pixel_size_nm < 0 or not np.isfinite(request.pixel_size_nm):
            raise InvalidArgument(f"pixel_size_nm must be >= 0, got {request.pixel_size_nm}", field="pixel_size_nm")
        method, model = await self._method_and_model(request, timer)
        sizing = await self.pipeline.analyze(image, method, request.bright_particles, timer,
                                             context.time_remaining(), model, request.test_time_augmentation)
        with timer.stage("postprocess"):
            return response(sizing, request.pixel_size_nm, timer)

    async def _method_and_model(self, request, timer: metrics.StageTimer) -> tuple[str, OnnxModel | None]:
        """The method and model a request runs. A baseline named as the model is its method; another
        named model runs the method of its task; no method and no model: the default method."""
        if request.method and request.method not in METHOD_NAMES:
            raise InvalidArgument(f"unknown method {request.method}", field="method")
        method = METHOD_NAMES.get(request.method)
        name, version = request.model.name, request.model.version
        if name in BASELINES:
            if method and method != name:
                raise InvalidArgument(f"model {name!r} is the {name} baseline; it cannot run method {method}",
                                      field="model.name")
            return name, None
        with timer.stage("model"):  # loaded already, or fetched from the models bucket
            if method is None and name:
                named = await asyncio.to_thread(self.pipeline.registry.get, name, version)
                method = METHOD_OF_TASK.get(named.bundle.task)
                if method is None:
                    raise InvalidArgument(f"model {named.key} has task {named.bundle.task}, which no method runs",
                                          field="model.name")
            method = method or self.pipeline.default_method()
            if method not in MODEL_METHODS:
                return method, None
            if not (name or version) and self.pipeline.registry.loaded(MODEL_METHODS[method][1]) is None:
                raise NotFound(f"method {method} needs a model this service has not loaded", "model", method)
            return method, await asyncio.to_thread(self.pipeline.model_for, method, name, version)

    async def ListModels(self, request, context):
        """The loaded models and the baselines, each with the method it is the default model of
        (``default_for``); the default entry is the CNN's model, or watershed without one."""
        await asyncio.to_thread(self.pipeline.registry.refresh)
        baselines = [common_pb2.ModelInfo() for _ in baseline_infos()]
        for fresh, cached in zip(baselines, baseline_infos(), strict=True):
            fresh.CopyFrom(cached)  # the cached entries are shared: mark copies
        models = [*self.pipeline.registry.infos(serving_code_sha256()), *baselines]
        default = self.pipeline.default_method()
        for info in models:
            for method, (_, shipped) in MODEL_METHODS.items():
                if info.name == shipped:
                    info.default_for.append(method)
            if info.name in BASELINES:
                info.default_for.append(info.name)
                info.is_default = info.name == default
        return tem_pb2.ListModelsResponse(models=models)


def servicer(pipeline: TemPipeline) -> Servicer:
    return Servicer(TemServicer(pipeline), tem_pb2_grpc.add_TemServiceServicer_to_server, FULL_NAME)
