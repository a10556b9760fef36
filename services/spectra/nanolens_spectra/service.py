"""The spectra service: a transport-free pipeline and the gRPC servicer that translates to it.

Pipeline per model: spike removal on the native channels -> resampling onto the model's axis
-> baseline correction (numpy, vectorised) -> ONNX graph (normalisation, PCA, MLP, softmax).
Single-spectrum requests are batched dynamically; map blocks are batches already.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from functools import cache
from pathlib import Path

import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_runtime import arrays, metrics
from nanolens_runtime.batching import DynamicBatcher
from nanolens_runtime.errors import InvalidArgument
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.ranged import RangedObject
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import Servicer
from nanolens_runtime.service import DomainService, DomainServicer, Pipeline
from nanolens_runtime.settings import InferenceSettings, StorageSettings, from_env
from nanolens_spectra.bundles import DEFAULT_BUNDLE_NAME
from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess

SERVICE = "spectra"
TASK = "spectra-classification"
DEFAULT_MODEL = DEFAULT_BUNDLE_NAME
SPECTRA = DomainService(SERVICE, (TASK,), DEFAULT_MODEL, Path(__file__).resolve().parent, libraries=("numpy",))
SHIPPED_BUNDLES = SPECTRA.bundles
#: The graph output of bundles calibrated for out-of-domain inputs (score above 1: unlike the training data).
OOD_OUTPUT = "ood_score"
FULL_NAME = spectra_pb2.DESCRIPTOR.services_by_name["SpectraService"].full_name


class SpectraPipeline(Pipeline):
    """Classify spectra with one registry of models; no gRPC types in here beyond results.

    preprocess: spike removal, resampling onto the model's axis, baseline correction (numpy);
    predict: the ONNX graph (normalisation, PCA, MLP, softmax). Single spectra are batched
    dynamically (:meth:`classify`); map blocks are batches already (:meth:`run`)."""

    # Batches are per model and x axis (spikes are removed on the native channels before
    # resampling, so spectra on different axes cannot share a batch). Kept for a few axes.
    MAX_BATCHERS = 32

    def __init__(self, registry: ModelRegistry, pool: InferencePool, settings: InferenceSettings):
        super().__init__(SPECTRA, registry, pool)
        self.settings = settings
        self._batchers: OrderedDict[tuple[str, bytes], DynamicBatcher] = OrderedDict()
        self._params: dict[str, PreprocessParams] = {}
        self._axes: dict[str, np.ndarray] = {}

    def params(self, model: OnnxModel) -> PreprocessParams:
        """The model's preprocessing parameters and axis, parsed once (this is on every request's path)."""
        if model.key not in self._params:
            params = PreprocessParams.from_dict(model.bundle.manifest["preprocessing"])
            self._params[model.key] = params
            self._axes[model.key] = params.model_axis()
        return self._params[model.key]

    def model_axis(self, model: OnnxModel) -> np.ndarray:
        self.params(model)
        return self._axes[model.key]

    def validate(self, model: OnnxModel, spectra: np.ndarray, axis: np.ndarray | None,
                 field: str = "spectra") -> tuple[np.ndarray, np.ndarray]:
        """An N x C float32 block and its x axis (the model's when none was sent)."""
        if spectra.ndim == 1:
            spectra = spectra[None, :]
        if spectra.ndim != 2:
            raise InvalidArgument(f"{field} must be N x C or C, got shape {list(spectra.shape)}",
                                  field=f"{field}.shape")
        if spectra.shape[0] == 0 or spectra.shape[1] == 0:
            raise InvalidArgument(f"{field} is empty (shape {list(spectra.shape)})", field=f"{field}.shape")
        if axis is None:
            axis = self.model_axis(model)
            if spectra.shape[1] != axis.size:
                raise InvalidArgument(
                    f"{field} has {spectra.shape[1]} channels but model {model.key} expects {axis.size}; "
                    "send the x axis to have them resampled", field=f"{field}.shape")
        elif axis.ndim != 1 or axis.size != spectra.shape[1]:
            raise InvalidArgument(f"axis has shape {list(axis.shape)} but {field} has {spectra.shape[1]} channels",
                                  field="axis")
        return spectra.astype(np.float32, copy=False), axis

    def preprocess(self, inputs: tuple[np.ndarray, np.ndarray], model: OnnxModel) -> np.ndarray:
        spectra, axis = inputs
        try:
            return preprocess(spectra, axis, self.params(model))
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="spectra") from exc

    def predict(self, features: np.ndarray, model: OnnxModel, run_options=None) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N x K) and out-of-domain scores (N; NaN for a model without them)."""
        outputs = dict(zip(model.output_names, model.run({"spectra": features}, run_options), strict=True))
        probabilities = outputs.get("probabilities", next(iter(outputs.values())))
        ood = outputs.get(OOD_OUTPUT)
        if ood is None:
            ood = np.full(len(probabilities), np.nan, dtype=np.float32)
        return probabilities, ood.astype(np.float32, copy=False)

    def _run_sync(self, model: OnnxModel, spectra: np.ndarray,
                  axis: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Preprocess and predict in the calling (pool) thread, for a dynamic batch; returns
        probabilities, out-of-domain scores and the two stage times."""
        start = time.perf_counter()
        features = self.preprocess((spectra, axis), model)
        mid = time.perf_counter()
        probabilities, ood = self.predict(features, model)
        return probabilities, ood, mid - start, time.perf_counter() - mid

    async def run_block(self, model: OnnxModel, spectra: np.ndarray, axis: np.ndarray, timer: metrics.StageTimer,
                        deadline_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One already-large block (a map chunk): no batching, the deadline stops the model run.
        Returns probabilities and out-of-domain scores."""
        return await self.run((spectra, axis), model, timer, deadline_s)

    def batcher(self, model: OnnxModel, axis: np.ndarray) -> DynamicBatcher:
        if axis is self._axes.get(model.key):
            key = (model.key, b"model axis")
        else:
            key = (model.key, hashlib.sha1(np.ascontiguousarray(axis, dtype=np.float64).tobytes()).digest())
        if key in self._batchers:
            self._batchers.move_to_end(key)
            return self._batchers[key]

        async def run_batch(items: np.ndarray) -> list[np.ndarray]:
            probabilities, ood, pre, inf = await self.pool.call(self._run_sync, model, items, axis)
            # Every request of the batch reports the batch's stage times.
            return [probabilities, ood, np.tile(np.array([pre, inf]), (len(items), 1))]

        self._batchers[key] = DynamicBatcher(
            run_batch, self.settings.max_batch_size, self.settings.max_batch_delay_ms / 1000.0, model.key,
            max_concurrent_batches=self.pool.threads)
        if len(self._batchers) > self.MAX_BATCHERS:
            self._batchers.popitem(last=False)
        return self._batchers[key]

    async def classify(self, model: OnnxModel, spectra: np.ndarray, axis: np.ndarray,
                       timer: metrics.StageTimer) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and out-of-domain scores, the spectra batched with concurrent requests'."""
        probabilities, ood, timings = await self.batcher(model, axis).submit(spectra)
        timer.add("preprocess", float(timings[0, 0]))
        timer.add("inference", float(timings[0, 1]))
        return probabilities, ood


def provenance(model: OnnxModel, timer: metrics.StageTimer) -> common_pb2.Provenance:
    return SPECTRA.provenance(model, timer)


def _scores(ood: np.ndarray) -> list[float]:
    """The wire's ood_score: empty for a model without the output (its scores are NaN)."""
    return [] if np.isnan(ood).all() else ood.tolist()


def _axis(message: common_pb2.NDArray) -> np.ndarray | None:
    if not message.shape and not message.data:
        return None
    return arrays.from_proto(message, "axis").astype(np.float64)


@cache
def serving_code_sha256() -> str:
    """sha256 of the serving code (``science/``, this module, numpy's version), in every catalogue
    entry, so that the gateway recomputes stored results when it changes."""
    return SPECTRA.code_sha256()


class SpectraServicer(DomainServicer, spectra_pb2_grpc.SpectraServiceServicer):
    list_response = spectra_pb2.ListModelsResponse

    async def _model(self, selector: spectra_pb2.ModelSelector) -> OnnxModel:
        return await self.pipeline.model(selector.name, selector.version)

    async def ClassifySpectra(self, request, context):
        timer = metrics.StageTimer()
        model = await self._model(request.model)
        with timer.stage("decode"):
            spectra, axis = self.pipeline.validate(model, arrays.from_proto(request.spectra, "spectra"),
                                                   _axis(request.axis))
        probabilities, ood = await self.pipeline.classify(model, spectra, axis, timer)
        with timer.stage("postprocess"):
            response = spectra_pb2.ClassifySpectraResponse(
                probabilities=arrays.to_proto(probabilities),
                predicted_class=probabilities.argmax(axis=1).tolist(),
                class_names=model.bundle.class_names,
                ood_score=_scores(ood),
            )
        response.provenance.CopyFrom(provenance(model, timer))
        return response

    async def ClassifyMap(self, request_iterator, context):
        # Receive ahead: the next block crosses the wire and is parsed while this one is classified.
        queue: asyncio.Queue = asyncio.Queue(maxsize=2)

        async def receive():
            try:
                async for request in request_iterator:
                    await queue.put(request)
            finally:
                await queue.put(None)

        reader = asyncio.create_task(receive())
        try:
            async for response in self._classify_map(queue, context):
                yield response
            await reader  # a broken request stream surfaces here
        finally:
            reader.cancel()

    async def _classify_map(self, queue: asyncio.Queue, context):
        timer = metrics.StageTimer()
        header = None
        model = axis = None
        offset = total = 0

        async def classify(block: np.ndarray, field: str) -> spectra_pb2.ClassifyMapResponse:
            nonlocal offset
            with timer.stage("decode"):
                if block.ndim != 2 or block.shape[1] != header.shape[2]:
                    raise InvalidArgument(f"block shape {list(block.shape)} does not match C={header.shape[2]}",
                                          field="block.shape")
                if offset + block.shape[0] > total:
                    raise InvalidArgument(f"blocks hold more than the H*W={total} pixels of the header",
                                          field="block")
                block, block_axis = self.pipeline.validate(model, block, axis, field=field)
            probabilities, ood = await self.pipeline.run_block(model, block, block_axis, timer,
                                                               context.time_remaining())
            response = spectra_pb2.ClassifyMapResponse(offset=offset, probabilities=arrays.to_proto(probabilities),
                                                       ood_score=_scores(ood))
            if offset == 0:
                response.class_names.extend(model.bundle.class_names)
            offset += block.shape[0]
            return response

        while (request := await queue.get()) is not None:
            part = request.WhichOneof("part")
            if part == "header":
                if header is not None:
                    raise InvalidArgument("header sent twice", field="header")
                header = request.header
                shape = list(header.shape)
                if len(shape) != 3 or min(shape) <= 0:
                    raise InvalidArgument(f"header.shape must be H, W, C > 0, got {shape}", field="header.shape")
                total = shape[0] * shape[1]
                model = await self._model(header.model)
                axis = _axis(header.axis)
                if header.HasField("source"):
                    async for block in _source_blocks(header.source, shape, timer):
                        yield await classify(block, "header.source")
                continue
            if header is None:
                raise InvalidArgument("the first message must be the header", field="header")
            if part != "block":
                raise InvalidArgument("a message carries neither header nor block", field="part")
            if header.HasField("source"):
                raise InvalidArgument("blocks were sent for a map whose header names its source", field="block")
            with timer.stage("decode"):
                block = arrays.from_proto(request.block, "block")
            yield await classify(block, "block")
        if header is None:
            raise InvalidArgument("no header: an empty stream is not a map", field="header")
        if offset != total:
            raise InvalidArgument(f"the map has {total} pixels but {offset} arrived", field="block")
        final = spectra_pb2.ClassifyMapResponse(offset=offset)
        final.provenance.CopyFrom(provenance(model, timer))
        yield final


#: bytes per ranged GET of a map read by reference, when the gateway names none
SOURCE_BLOCK_BYTES = 8 << 20


async def _source_blocks(source: spectra_pb2.MapSource, shape: list[int], timer: metrics.StageTimer):
    """The pixels of a map read from object storage by ``source`` (a presigned URL), in blocks of
    rows; the next block is fetched while the caller classifies this one."""
    try:
        dtype = np.dtype(source.dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise InvalidArgument(f"header.source.dtype must be a numeric type such as '<f4', got {source.dtype!r}",
                              field="header.source.dtype")
    if source.offset < 0:
        raise InvalidArgument(f"header.source.offset must be >= 0, got {source.offset}", field="header.source.offset")
    storage = _storage()
    target = RangedObject(source.url, storage.s3_endpoint, storage.s3_secure, "header.source.url")
    channels, total = shape[2], shape[0] * shape[1]
    rows = max(1, (source.block_bytes or SOURCE_BLOCK_BYTES) // (channels * dtype.itemsize))

    def fetch(start: int) -> np.ndarray:
        n = min(rows, total - start)
        data = target.read(source.offset + start * channels * dtype.itemsize, n * channels * dtype.itemsize)
        return np.frombuffer(data, dtype).reshape(n, channels)

    async def timed(start: int) -> np.ndarray:
        with timer.stage("fetch"):
            return await asyncio.to_thread(fetch, start)

    starts = list(range(0, total, rows))
    pending = asyncio.ensure_future(timed(starts[0]))
    try:
        for i in range(len(starts)):
            block = await pending
            if i + 1 < len(starts):
                pending = asyncio.ensure_future(timed(starts[i + 1]))
            yield block
    finally:
        if not pending.done():
            pending.cancel()


@cache
def _storage() -> StorageSettings:
    return from_env(StorageSettings)


def servicer(pipeline: SpectraPipeline) -> Servicer:
    return Servicer(SpectraServicer(pipeline), spectra_pb2_grpc.add_SpectraServiceServicer_to_server, FULL_NAME)
