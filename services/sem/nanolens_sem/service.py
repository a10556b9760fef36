"""The SEM service: one windowed pass of the autoencoder gives the lens (activation maps and
statistics), the embedding, the anomaly maps and, with a head, a classification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import Counter, Histogram

from nanolens.common.v1 import common_pb2
from nanolens.sem.v1 import sem_pb2, sem_pb2_grpc
from nanolens_runtime import arrays, metrics
from nanolens_runtime.errors import InvalidArgument
from nanolens_runtime.inference import OnnxModel
from nanolens_runtime.server import Servicer
from nanolens_runtime.service import DomainService, DomainServicer, Pipeline
from nanolens_sem.science import anomaly, heads, images, lens

SERVICE = "sem"
AUTOENCODER_TASK, HEAD_TASK = "sem-autoencoder", "sem-classifier"
DEFAULT_MODEL = "sem-autoencoder"
SEM = DomainService(SERVICE, (AUTOENCODER_TASK, HEAD_TASK), DEFAULT_MODEL, Path(__file__).resolve().parent,
                    libraries=("numpy", "scipy", "onnxruntime"))
FULL_NAME = sem_pb2.DESCRIPTOR.services_by_name["SemService"].full_name
DEFAULT_MAX_SIDE, MAX_SIDE = 256, 1024
WINDOW = 512  # px: one run's input side; bounds memory whatever the image size
TOP_CHANNELS = 8

images_counter = Counter("nanolens_sem_images_total", "SEM images through the autoencoder.", ("service", "output"))
anomaly_histogram = Histogram("nanolens_sem_anomaly_percentile",
                              "Image anomaly score: percentile of its reconstruction error among the training tiles.",
                              ("service",), buckets=(50, 90, 95, 99, 99.9, 100))


@dataclass(frozen=True)
class SemRequest:
    image: np.ndarray  # H x W as sent
    layers: tuple[str, ...]
    max_side: int
    anomaly: bool
    head: OnnxModel | None
    keep_info_bar: bool
    max_channels: int = 0  # maps of the most active channels per layer in the response; 0: all


@dataclass
class Prepared:
    image: np.ndarray  # h x W as sent, information bar removed
    info_bar_rows: int
    scale: tuple[float, float]  # intensities mapped to 0-1


@dataclass
class SemResult:
    pass_: lens.LensResult
    info_bar_rows: int
    anomaly: anomaly.AnomalyMaps | None
    probabilities: np.ndarray | None
    ood_score: float | None  # the head's novelty score (above 1: unlike every class); None without


def embedding_spec(manifest: dict) -> tuple[tuple[str, ...], tuple[np.ndarray, np.ndarray] | None]:
    """The embedding's layers and its standardisation (mean, std per dimension) from a manifest."""
    spec = manifest["embedding"]
    standardise = None
    if "mean" in spec:
        standardise = (np.asarray(spec["mean"], np.float64), np.maximum(np.asarray(spec["std"], np.float64), 1e-6))
    return tuple(spec["layers"]), standardise


def layer_names(model: OnnxModel) -> tuple[str, ...]:
    return tuple(model.bundle.manifest["layers"])


class SemPipeline(Pipeline):
    """preprocess: the information bar out, intensities to 0-1; predict: the windowed pass;
    postprocess: anomaly percentiles and the head's probabilities."""

    def __init__(self, registry, pool):
        super().__init__(SEM, registry, pool)

    def preprocess(self, request: SemRequest, model: OnnxModel) -> tuple[SemRequest, Prepared]:
        percentiles = tuple(model.bundle.manifest["preprocessing"]["percentiles"])
        return request, Prepared(*images.prepare(request.image, percentiles, request.keep_info_bar))

    def predict(self, features: tuple[SemRequest, Prepared], model: OnnxModel,
                run_options: ort.RunOptions) -> tuple[Prepared, lens.LensResult]:
        request, prepared = features
        layers, standardise = embedding_spec(model.bundle.manifest)
        return prepared, lens.run_windows(model.session, prepared.image, request.layers, WINDOW, request.max_side,
                                          run_options, layers, standardise, prepared.scale)

    def postprocess(self, outputs: tuple[Prepared, lens.LensResult], request: SemRequest,
                    model: OnnxModel) -> SemResult:
        prepared, result = outputs
        maps = None
        if request.anomaly:
            cal = anomaly.Calibration.from_manifest(model.bundle.manifest["calibration"])
            maps = anomaly.score(result.block_errors, result.squared_error, prepared.image.size, cal, request.max_side)
        probs, ood = heads.classify(request.head.session, result.embedding) if request.head else (None, None)
        return SemResult(result, prepared.info_bar_rows, maps, probs, ood)

    def analyse(self, request: SemRequest, model: OnnxModel) -> SemResult:
        """The three stages in the calling thread (blocking): benchmarks, the CLI's head training."""
        return self.postprocess(self.predict(self.preprocess(request, model), model, ort.RunOptions()), request, model)


def check_image(message: common_pb2.NDArray) -> np.ndarray:
    image = arrays.from_proto(message, "image")
    if image.ndim != 2 or min(image.shape) < 16:
        raise InvalidArgument(f"image must be H x W with sides >= 16, got {list(image.shape)}", field="image.shape")
    if image.dtype.kind not in "uf" or image.dtype.itemsize > 4:
        raise InvalidArgument(f"image dtype {image.dtype} is not uint8, uint16 or float32", field="image.dtype")
    arrays.require_micrograph_levels(image, "image")
    return image


def layer_message(layer: lens.LayerMaps, max_channels: int = 0) -> sem_pb2.LayerLens:
    """The layer's statistics and maps; with ``max_channels``, the maps of only that many of the most
    active channels (a picture shows a few: the response need not carry every channel)."""
    means = layer.channel_means()
    ranked = np.argsort(-means, kind="stable")
    top = ranked[:TOP_CHANNELS]
    sent = ranked[:max_channels] if 0 < max_channels < layer.channels else np.arange(layer.channels)
    return sem_pb2.LayerLens(name=layer.name, channels=layer.channels, stride=layer.stride, mean=layer.mean,
                             std=layer.std, sparsity=layer.sparsity, peak=layer.peak,
                             top_channels=top.tolist(), top_channel_means=means[top].tolist(),
                             maps=arrays.to_proto(layer.maps[sent].astype(np.float16)), map_channels=sent.tolist())


def anomaly_message(maps: anomaly.AnomalyMaps) -> sem_pb2.Anomaly:
    return sem_pb2.Anomaly(error_map=arrays.to_proto(maps.error_map), block_px=lens.BLOCK,
                           percentile_map=arrays.to_proto(maps.percentile_map), image_error=maps.image_error,
                           image_percentile=maps.image_percentile, tile_px=maps.tile_px,
                           anomalous_fraction=maps.anomalous_fraction, psnr_db=maps.psnr_db)


class SemServicer(DomainServicer, sem_pb2_grpc.SemServiceServicer):
    list_response = sem_pb2.ListModelsResponse

    async def AnalyzeImage(self, request, context):
        timer = metrics.StageTimer()
        with timer.stage("decode"):
            image = check_image(request.image)
        max_side = request.max_side or DEFAULT_MAX_SIDE
        if not 16 <= max_side <= MAX_SIDE:
            raise InvalidArgument(f"max_side must be 16-{MAX_SIDE} px (0: {DEFAULT_MAX_SIDE}), got {request.max_side}",
                                  field="max_side")
        with timer.stage("model"):
            model = await self.pipeline.model(request.model.name, request.model.version)
            if model.bundle.task != AUTOENCODER_TASK:
                raise InvalidArgument(f"model {model.key} has task {model.bundle.task}, not {AUTOENCODER_TASK}",
                                      field="model.name")
            head = await self.head(request.classifier, model) if request.classifier.name else None
        known = layer_names(model)
        unknown = [name for name in request.layers if name not in known]
        if unknown:
            raise InvalidArgument(f"unknown layers {unknown}; {model.key} has {list(known)}", field="layers")
        layers = tuple(dict.fromkeys(request.layers or known)) if request.lens else ()
        if request.max_channels < 0:
            raise InvalidArgument(f"max_channels must be >= 0 (0: every channel), got {request.max_channels}",
                                  field="max_channels")
        sem_request = SemRequest(image, layers, max_side, request.anomaly, head, request.keep_info_bar,
                                 request.max_channels)
        result = await self.pipeline.run(sem_request, model, timer, context.time_remaining())
        with timer.stage("encode"):
            response = self.encode(result, image.shape, head, request.max_channels)
        for output, wanted in (("lens", request.lens), ("anomaly", request.anomaly), ("classify", head is not None),
                               ("embed", True)):
            if wanted:
                images_counter.labels(SERVICE, output).inc()
        if result.anomaly is not None:
            anomaly_histogram.labels(SERVICE).observe(result.anomaly.image_percentile)
        response.provenance.CopyFrom(SEM.provenance(model, timer))
        return response

    async def head(self, selector: common_pb2.ModelSelector, model: OnnxModel) -> OnnxModel:
        """The classifier head, checked against the autoencoder whose embeddings it was trained on."""
        head = await self.pipeline.model(selector.name, selector.version)
        if head.bundle.task != HEAD_TASK:
            raise InvalidArgument(f"model {head.key} has task {head.bundle.task}, not {HEAD_TASK}",
                                  field="classifier.name")
        wants = head.bundle.manifest["embedding_model"]
        if wants["sha256"] != model.bundle.sha256:
            raise InvalidArgument(f"head {head.key} was trained on embeddings of {wants['name']} {wants['version']}, "
                                  f"not of {model.key}: choose that autoencoder or retrain the head",
                                  field="classifier.name")
        return head

    @staticmethod
    def encode(result: SemResult, shape: tuple[int, int], head: OnnxModel | None,
               max_channels: int = 0) -> sem_pb2.AnalyzeImageResponse:
        response = sem_pb2.AnalyzeImageResponse(
            height=shape[0], width=shape[1], info_bar_rows=result.info_bar_rows, windows=result.pass_.windows,
            layers=[layer_message(layer, max_channels) for layer in result.pass_.layers],
            embedding=arrays.to_proto(result.pass_.embedding))
        if result.pass_.layers or result.anomaly is not None:
            response.reconstruction.CopyFrom(arrays.to_proto(result.pass_.reconstruction.astype(np.float16)))
        if result.anomaly is not None:
            response.anomaly.CopyFrom(anomaly_message(result.anomaly))
        if head is not None:
            classes = list(head.bundle.manifest["class_names"])
            best = int(np.argmax(result.probabilities))
            info = common_pb2.ModelInfo(name=head.bundle.name, version=head.bundle.version, task=head.bundle.task,
                                        sha256=head.bundle.sha256)
            response.classification.CopyFrom(sem_pb2.Classification(
                label=classes[best], probability=float(result.probabilities[best]), classes=classes,
                probabilities=result.probabilities.tolist(), head=info, ood_score=result.ood_score))
        return response


def servicer(pipeline: SemPipeline) -> Servicer:
    return Servicer(SemServicer(pipeline), sem_pb2_grpc.add_SemServiceServicer_to_server, FULL_NAME)
