"""The TEM service: primary-particle sizing by one of four methods, and its gRPC servicer.

The science lives in the neighbouring modules (``cnn``, ``ann``, ``baselines``); this module
picks the method, runs it in the inference pool, and measures what it found: particles,
agglomerates and the size distribution.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import skimage
from scipy import ndimage as ndi

from nanolens.common.v1 import common_pb2
from nanolens.tem.v1 import tem_pb2, tem_pb2_grpc
from nanolens_micrographs import detect_info_bar
from nanolens_runtime import arrays, metrics
from nanolens_runtime.bundles import code_sha256
from nanolens_runtime.enums import enum_words
from nanolens_runtime.errors import InvalidArgument, NotFound, ResourceExhausted
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import Servicer
from nanolens_runtime.service import DomainService, DomainServicer, Pipeline
from nanolens_runtime.version import SERVICE_VERSION
from nanolens_tem.science import baselines, segmentation
from nanolens_tem.science.ann import AnnSizer
from nanolens_tem.science.baselines import hough_segment, watershed_segment
from nanolens_tem.science.cnn import CnnSegmenter
from nanolens_tem.science.quality import Quality, assess, cross_check
from nanolens_tem.science.segmentation import ScaleChoice, Segmentation, bootstrap_ci, geometric_stats

SERVICE = "tem"
CNN_MODEL, ANN_MODEL = "tem-unet", "tem-ann"
TASKS = ("instance-segmentation", "agglomerate-sizing")
#: the methods that run a model: the task its model must have, and the shipped default model
MODEL_METHODS = {"cnn": (TASKS[0], CNN_MODEL), "ann": (TASKS[1], ANN_MODEL)}
TEM = DomainService(SERVICE, TASKS, CNN_MODEL, Path(__file__).resolve().parent,
                    libraries=("numpy", "scipy", "scikit-image", "onnxruntime"))
SHIPPED_BUNDLES = TEM.bundles
FULL_NAME = tem_pb2.DESCRIPTOR.services_by_name["TemService"].full_name
METHOD_NAMES = {number: word for word, number in enum_words(tem_pb2.Method, "METHOD_").items()}
METHOD_OF_TASK = {task: method for method, (task, _) in MODEL_METHODS.items()}
HISTOGRAM_BINS = 20
MAX_SCALE = 32.0  # a requested resampling factor, and the most pixels it may make
MAX_SCALED_PIXELS = 8192 * 8192
BASELINES = ("watershed", "hough")


def serving_code_sha256() -> str:
    """sha256 of the serving code (``science/``, this module, and the libraries they lean on); every
    catalogue entry carries it, so the gateway recomputes stored results when it changes."""
    return TEM.code_sha256()


@cache
def baseline_infos() -> tuple[common_pb2.ModelInfo, ...]:
    """The baselines as catalogue entries. They have no model file, so their sha256 is that of the
    code that runs them (``baselines.py``, the shared ``segmentation.py``, the scikit-image version)."""
    sha = code_sha256(Path(baselines.__file__), Path(segmentation.__file__),
                      extra=f"scikit-image {skimage.__version__}")
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
    weights: np.ndarray | None = None  # (K,) occlusion weights (nanolens_tem.science.occlusion); None: all 1
    quality: Quality | None = None  # plausibility (nanolens_tem.science.quality)
    scale: ScaleChoice | None = None  # the factor the model ran at (None: the image's own scale)


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
                  agglomerates[rows, cols].astype(np.int32), agglomerates, model, weights, scale=seg.scale)


@dataclass(frozen=True)
class Checked:
    """A method's segmentation and what the other analyses of the same image gave (keyword
    arguments of :func:`nanolens_tem.science.quality.measure`)."""

    seg: Segmentation
    others: dict[str, float]


@dataclass(frozen=True)
class SizingRequest:
    image: np.ndarray  # H x W greyscale
    method: str
    bright: bool = False
    tta: bool = False
    scale: float = 0.0  # the CNN's resampling factor; 0: the image's own scale (or chosen, below)
    choose_scale: bool = False  # the CNN's factor chosen from the image (nanolens_tem.science.cnn.choose_scale)


class TemPipeline(Pipeline):
    """predict: the method's segmentation (the CNN's tiling and instance step, the ANN's features
    and regressors, or a baseline); postprocess: particles, agglomerates and sizes."""

    def __init__(self, registry: ModelRegistry, pool: InferencePool):
        super().__init__(TEM, registry, pool)
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

    async def catalogue(self) -> list[common_pb2.ModelInfo]:
        """The loaded models and the baselines, each with the method it is the default model of
        (``default_for``); the default entry is the CNN's model, or watershed without one."""
        baselines = [common_pb2.ModelInfo() for _ in baseline_infos()]
        for fresh, cached in zip(baselines, baseline_infos(), strict=True):
            fresh.CopyFrom(cached)  # the cached entries are shared: mark copies
        models = [*await super().catalogue(), *baselines]
        default = self.default_method()
        for info in models:
            for method, (_, shipped) in MODEL_METHODS.items():
                if info.name == shipped:
                    info.default_for.append(method)
            if info.name in BASELINES:
                info.default_for.append(info.name)
                info.is_default = info.name == default
        return models

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

    def predict(self, request: SizingRequest, model: OnnxModel | None, run_options: ort.RunOptions) -> Checked:
        """Segment one image (blocking), and run the analyses the verdict compares it with
        (:func:`nanolens_tem.science.quality.cross_check`). ``model``: from :meth:`model_for` (default:
        the method's shipped model); ``run_options`` lets the caller terminate the CNN's model runs;
        ``tta``: the CNN's test-time augmentation (:meth:`CnnSegmenter.predict_maps`)."""
        dark = not request.bright
        for option, field in ((request.tta, "test_time_augmentation"), (request.scale, "scale"),
                              (request.choose_scale, "choose_scale")):
            if option and request.method != "cnn":
                raise InvalidArgument(f"{field} applies to the cnn method only, not {request.method}", field=field)
        if request.method in MODEL_METHODS:
            runner = self._runner(model or self.model_for(request.method))
            if isinstance(runner, CnnSegmenter):
                scale = "auto" if request.choose_scale else (request.scale or 1.0)
                runner = dataclasses.replace(runner, run_options=run_options, scale=scale)
            segment = functools.partial(runner.segment, dark_particles=dark)
        elif request.method == "watershed":
            segment = functools.partial(watershed_segment, dark_particles=dark)
        else:
            segment = functools.partial(hough_segment, dark_particles=dark)
        seg = segment(request.image, tta=True) if request.tta else segment(request.image)
        if not (request.scale or request.choose_scale):
            seg.scale = None  # the image's own scale: nothing was resampled or chosen
        return Checked(seg, cross_check(request.image, segment, dark, classical=request.method != "watershed"))

    def postprocess(self, checked: Checked, request: SizingRequest, model: OnnxModel | None) -> Sizing:
        if request.method in MODEL_METHODS:
            model = model or self.model_for(request.method)
        sizing = measure(request.method, request.image.shape, checked.seg, model)
        return dataclasses.replace(sizing, quality=assess(request.image, sizing.labels, sizing.diameters_px,
                                                          sizing.weights, **checked.others))

    def segment(self, image: np.ndarray, method: str, bright: bool = False, model: OnnxModel | None = None,
                tta: bool = False, scale: float = 0.0, choose_scale: bool = False) -> Sizing:
        """:meth:`predict` and :meth:`postprocess` in the calling thread (benchmarks, notebooks)."""
        request = SizingRequest(image, method, bright, tta, scale, choose_scale)
        return self.postprocess(self.predict(request, model, ort.RunOptions()), request, model)


def with_rows_below(sizing: Sizing, rows: int) -> Sizing:
    """The sizing of an image whose bottom ``rows`` were left out, on the whole image (label 0 there)."""
    if not rows:
        return sizing
    pad = ((0, rows), (0, 0))
    return dataclasses.replace(sizing, labels=np.pad(sizing.labels, pad), agglomerates=np.pad(sizing.agglomerates, pad))


def particle_weights(sizing: Sizing) -> np.ndarray:
    return np.ones(len(sizing.diameters_px)) if sizing.weights is None else sizing.weights


def distribution(sizing: Sizing, pixel_size_nm: float) -> tem_pb2.Distribution:
    sized = sizing.diameters_px > 0
    d, w = sizing.diameters_px[sized], particle_weights(sizing)[sized]
    gmd, gsd = geometric_stats(d, w) if d.size else (0.0, 0.0)
    (gmd_low, gmd_high), (gsd_low, gsd_high) = bootstrap_ci(d, w)
    scale, unit = (pixel_size_nm, "nm") if pixel_size_nm > 0 else (1.0, "px")
    counts, edges = np.histogram(d * scale, bins=HISTOGRAM_BINS) if d.size else (np.zeros(0, int), np.zeros(0))
    estimated = np.histogram(d * scale, bins=edges, weights=w)[0] if d.size else np.zeros(0)
    return tem_pb2.Distribution(count=int(d.size), gmd_px=gmd, gmd_nm=gmd * pixel_size_nm, gsd=gsd,
                                histogram_edges=edges.tolist(), histogram_counts=counts.tolist(), unit=unit,
                                occlusion_corrected=sizing.weights is not None, estimated_count=float(w.sum()),
                                histogram_estimated_counts=estimated.tolist(), gmd_px_ci_low=gmd_low,
                                gmd_px_ci_high=gmd_high, gsd_ci_low=gsd_low, gsd_ci_high=gsd_high)


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
    baseline = {b.name: b for b in baseline_infos()}.get(sizing.method)
    provenance = TEM.provenance(sizing.model, timer, name=sizing.method, sha256=baseline.sha256 if baseline else "",
                                provider="numpy/scikit-image")
    return tem_pb2.AnalyzeImageResponse(
        method=sizing.method, particles=particles, agglomerates=agglomerates,
        distribution=distribution(sizing, pixel_size_nm), labels=arrays.to_proto(sizing.labels),
        provenance=provenance, quality=quality_proto(sizing.quality),
        scale=None if sizing.scale is None else tem_pb2.Scale(
            factor=sizing.scale.factor, source=sizing.scale.source, typical_radius_px=sizing.scale.typical_radius_px))


def quality_proto(quality: Quality | None) -> tem_pb2.Quality:
    if quality is None:
        return tem_pb2.Quality()
    signals = quality.signals
    return tem_pb2.Quality(contrast_to_noise=signals.contrast_to_noise, coverage=signals.coverage,
                           trustworthy=quality.trustworthy, warnings=list(quality.warnings),
                           edge_fraction=signals.edge_fraction, faint_fraction=signals.faint_fraction,
                           outline_ratio=signals.outline_ratio, classical_ratio=signals.classical_ratio,
                           classical_count_ratio=signals.classical_count_ratio,
                           half_scale_ratio=signals.half_scale_ratio)


class TemServicer(DomainServicer, tem_pb2_grpc.TemServiceServicer):
    list_response = tem_pb2.ListModelsResponse

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
        if not 0 <= request.scale <= MAX_SCALE:  # NaN fails too
            raise InvalidArgument(f"scale must be between 0 (the image's own) and {MAX_SCALE:g}, got "
                                  f"{request.scale}", field="scale")
        if request.scale and request.choose_scale:
            raise InvalidArgument(f"choose_scale asks for the factor to be chosen from the image, and scale names "
                                  f"one ({request.scale:g}): give one of them", field="choose_scale")
        if request.scale**2 * image.size > MAX_SCALED_PIXELS:
            raise InvalidArgument(f"scale {request.scale:g} makes the {image.shape[1]} x {image.shape[0]} image "
                                  f"{request.scale**2 * image.size / 1e6:.0f} Mpx for the network, over "
                                  f"{MAX_SCALED_PIXELS / 1e6:.0f}", field="scale")
        method, model = await self._method_and_model(request, timer)
        if not 0 <= request.info_bar_rows < image.shape[0]:
            raise InvalidArgument(f"info_bar_rows must be 0 to {image.shape[0] - 1}, got {request.info_bar_rows}",
                                  field="info_bar_rows")
        bar = 0 if request.keep_info_bar else (request.info_bar_rows or detect_info_bar(image))
        if image.shape[0] - bar < 16:
            bar = 0  # a "bar" that leaves no micrograph is the micrograph
        sizing = await self.pipeline.run(SizingRequest(image[:image.shape[0] - bar], method, request.bright_particles,
                                                       request.test_time_augmentation, request.scale,
                                                       request.choose_scale),
                                         model, timer, context.time_remaining())
        with timer.stage("encode"):
            out = response(with_rows_below(sizing, bar), request.pixel_size_nm, timer)
            out.info_bar_rows = bar
            return out

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



def servicer(pipeline: TemPipeline) -> Servicer:
    return Servicer(TemServicer(pipeline), tem_pb2_grpc.add_TemServiceServicer_to_server, FULL_NAME)
