"""Spectra analyses as the gateway runs them: fetch, decode, call the service, build the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_formats.files import suffix_of
from nanolens_formats.spectra import NpyLayout, SpectraData, decode_spectra, parse_npy_header
from nanolens_gateway.adapters import pictures
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.domains import Analysis, Domain, Option
from nanolens_gateway.results import Artefact
from nanolens_gateway.schema import array, integer, mapping, number, record, string
from nanolens_gateway.upstream import ServiceClient, translate
from nanolens_runtime import arrays
from nanolens_runtime.errors import InvalidArgument

NPY_HEADER_READ = 4096
OPTIONS = (Option("array_key", "the array of an .npz file holding the spectra (default: 'spectra' or the only one)"),)


def selector(ctx: AnalysisContext) -> spectra_pb2.ModelSelector:
    return spectra_pb2.ModelSelector(name=ctx.model.name, version=ctx.model.version)


_CLASS_NAMES = array(string("class"), "the model's classes, in its output order")
SPECTRA_RESULT = {
    "n_spectra": integer("spectra classified"),
    "class_names": _CLASS_NAMES,
    "class_counts": mapping(integer("spectra"), "spectra predicted in each class"),
    "spectra": array(record("one spectrum (the first NANOLENS_MAX_LISTED)", index=integer("row in the input"),
                            **{"class": string("predicted class (highest probability)")},
                            probabilities=mapping(number("0..1"), "probability of each class")),
                     "per-spectrum predictions"),
    "listed": integer("how many spectra are listed in `spectra`"),
}
MAP_RESULT = {
    "shape": array(integer("size"), "[height, width, channels] of the map"),
    "n_spectra": integer("pixels classified (height x width)"),
    "class_names": _CLASS_NAMES,
    "class_fractions": mapping(number("0..1"), "fraction of the pixels predicted in each class"),
    "class_colours": mapping(string("#rrggbb"), "the colour of each class in class_map.png"),
    "mean_max_probability": number("mean over pixels of the highest class probability (0..1)"),
}


async def _fetch_whole(ctx: AnalysisContext) -> SpectraData:
    data = await ctx.fetch()
    with ctx.timer.stage("decode"):
        return await asyncio.to_thread(decode_spectra, data, ctx.source.key, ctx.options)


async def classify_spectra(ctx: AnalysisContext, client: ServiceClient) -> Outcome:
    decoded = await _fetch_whole(ctx)
    spectra = decoded.spectra[None, :] if decoded.spectra.ndim == 1 else decoded.spectra
    if spectra.ndim == 3:
        raise InvalidArgument(f"input holds an H x W x C map {list(spectra.shape)}; "
                              "analyse it as ANALYSIS_KIND_SPECTRAL_MAP", field="analysis")
    if spectra.ndim != 2:
        raise InvalidArgument(f"input has shape {list(spectra.shape)}; spectra are N x C or C", field="input")
    spectra = spectra.astype(np.float32, copy=False)
    axis = arrays.to_proto(decoded.axis) if decoded.axis is not None else common_pb2.NDArray()
    rows = max(1, ctx.block_bytes // (spectra.shape[1] * 4))
    parts = []
    for start in range(0, len(spectra), rows):
        request = spectra_pb2.ClassifySpectraRequest(
            spectra=arrays.to_proto(spectra[start:start + rows]), axis=axis, model=selector(ctx))
        try:
            response = await client.stub.ClassifySpectra(request, timeout=ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "spectra") from exc
        ctx.absorb(response.provenance)
        parts.append(arrays.from_proto(response.probabilities, "probabilities"))
        class_names = list(response.class_names)
    with ctx.timer.stage("postprocess"):
        probabilities = np.concatenate(parts)
        predicted = probabilities.argmax(axis=1)
        summary = {
            "n_spectra": int(len(spectra)),
            "class_names": class_names,
            "class_counts": {name: int((predicted == i).sum()) for i, name in enumerate(class_names)},
            "spectra": [
                {"index": i, "class": class_names[predicted[i]],
                 "probabilities": {n: round(float(p), 6) for n, p in zip(class_names, probabilities[i], strict=True)}}
                for i in range(min(len(spectra), ctx.max_listed))
            ],
            "listed": min(len(spectra), ctx.max_listed),
        }
        artefacts = [
            Artefact("probabilities.npy", pictures.npy_bytes(probabilities), "application/x-npy"),
            Artefact("spectra.png", pictures.spectra_png(spectra, decoded.axis, probabilities, class_names),
                     "image/png"),
        ]
    return Outcome(summary, artefacts)


# -- maps ----------------------------------------------------------------------------------


class _MapSource:
    """Row blocks of an H x W x C map: streamed from one GET for ``.npy``, slices of a decoded array otherwise."""

    def __init__(self, ctx: AnalysisContext, layout: NpyLayout | None, decoded: SpectraData | None):
        self.ctx = ctx
        self.layout = layout
        self.decoded = decoded
        self.shape = layout.shape if layout else decoded.spectra.shape
        self.axis = decoded.axis if decoded else None
        itemsize = layout.dtype.itemsize if layout else 4
        self.rows = max(1, ctx.block_bytes // (self.shape[2] * itemsize))
        self.pixels = self.shape[0] * self.shape[1]
        self._reader = None

    @classmethod
    async def open(cls, ctx: AnalysisContext) -> _MapSource:
        src = ctx.source
        what = f"input {src.key!r}"
        layout = decoded = None
        if suffix_of(src.key) != ".npy":
            decoded = await _fetch_whole(ctx)
        else:
            with ctx.timer.stage("fetch"):
                head = await asyncio.to_thread(ctx.store.get, src.bucket, src.key, src.version_id, 0,
                                               min(NPY_HEADER_READ, src.size))
            with ctx.timer.stage("decode"):
                layout = parse_npy_header(head, what)
            needed = layout.data_offset + int(np.prod(layout.shape)) * layout.dtype.itemsize
            if src.size < needed:
                raise InvalidArgument(f"{what} is truncated: {src.size} bytes, its header needs {needed}",
                                      field="input")
        shape = layout.shape if layout else decoded.spectra.shape
        if len(shape) != 3 or min(shape) == 0:
            raise InvalidArgument(f"a spectral map is H x W x C; {what} has shape {list(shape)}", field="input")
        return cls(ctx, layout, decoded)

    async def block(self, start: int) -> common_pb2.NDArray:
        n = min(self.rows, self.pixels - start)
        channels = self.shape[2]
        if self.layout is None:
            flat = self.decoded.spectra.reshape(self.pixels, channels)
            return arrays.to_proto(flat[start:start + n].astype(np.float32, copy=False))
        with self.ctx.timer.stage("fetch"):
            data = await asyncio.to_thread(self._reader.read_exactly, n * channels * self.layout.dtype.itemsize)
        wire_dtype = arrays.proto_dtype(self.layout.dtype)
        if wire_dtype is None:  # big-endian, or a type NDArray lacks: convert
            block = np.frombuffer(data, self.layout.dtype).astype(np.float32).reshape(n, channels)
            return arrays.to_proto(block)
        # The file's bytes go on the wire as they are: no decode, no copy.
        return common_pb2.NDArray(dtype=wire_dtype, shape=[n, channels], data=data)

    async def requests(self) -> AsyncIterator[spectra_pb2.ClassifyMapRequest]:
        header = spectra_pb2.MapHeader(shape=list(self.shape), model=selector(self.ctx))
        if self.axis is not None:
            header.axis.CopyFrom(arrays.to_proto(self.axis))
        yield spectra_pb2.ClassifyMapRequest(header=header)
        starts = list(range(0, self.pixels, self.rows))
        if self.layout is not None:
            # One GET for the whole data section, read block by block (blocks are requested in order).
            src = self.ctx.source
            self._reader = await asyncio.to_thread(self.ctx.store.open, src.bucket, src.key, src.version_id,
                                                   self.layout.data_offset)
        pending = asyncio.ensure_future(self.block(starts[0]))
        try:
            for i in range(len(starts)):
                block = await pending
                # Fetch the next block while this one is being classified.
                if i + 1 < len(starts):
                    pending = asyncio.ensure_future(self.block(starts[i + 1]))
                yield spectra_pb2.ClassifyMapRequest(block=block)
        finally:
            if not pending.done():
                pending.cancel()
            if self._reader is not None:
                self._reader.close()


async def classify_map(ctx: AnalysisContext, client: ServiceClient) -> Outcome:
    source = await _MapSource.open(ctx)
    height, width, _ = source.shape
    probabilities = class_names = None
    call = client.stub.ClassifyMap(source.requests(), timeout=ctx.remaining())
    try:
        async for response in call:
            if response.HasField("provenance"):
                ctx.absorb(response.provenance)
                continue
            block = arrays.from_proto(response.probabilities, "probabilities")
            if probabilities is None:
                class_names = list(response.class_names)
                probabilities = np.empty((source.pixels, block.shape[1]), dtype=np.float32)
            probabilities[response.offset:response.offset + len(block)] = block
    except grpc.aio.AioRpcError as exc:
        raise translate(exc, "spectra") from exc
    with ctx.timer.stage("postprocess"):
        prob_maps = probabilities.reshape(height, width, -1)
        class_map = prob_maps.argmax(axis=2).astype(np.uint8)
        counts = np.bincount(class_map.ravel(), minlength=len(class_names))
        summary = {
            "shape": [height, width, int(source.shape[2])],
            "n_spectra": int(source.pixels),
            "class_names": class_names,
            "class_fractions": {n: round(float(c) / source.pixels, 6)
                                for n, c in zip(class_names, counts, strict=True)},
            "class_colours": dict(zip(class_names, pictures.class_colours(len(class_names)), strict=True)),
            "mean_max_probability": round(float(prob_maps.max(axis=2).mean()), 6),
        }
        artefacts = [
            Artefact("class_map.npy", pictures.npy_bytes(class_map), "application/x-npy"),
            Artefact("probabilities.npy", pictures.npy_bytes(prob_maps), "application/x-npy"),
            Artefact("class_map.png", pictures.class_map_png(class_map, len(class_names)), "image/png"),
            Artefact("probability_maps.png", pictures.probability_maps_png(prob_maps), "image/png"),
        ]
    return Outcome(summary, artefacts)


def looks_like_map(path: Path) -> bool:
    """A local .npy/.npz whose (main) array is H x W x C is a spectral map."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 3
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = "spectra" if "spectra" in archive.files else archive.files[0]
                return archive[key].ndim == 3
    except (ValueError, OSError, IndexError):
        return False  # the gateway will say what is wrong with the file
    return False


def choose(path: Path, flags) -> int:
    """A spectral map when asked for (``--map``) or when the file holds an H x W x C array."""
    if getattr(flags, "map", False) or looks_like_map(path):
        return gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP
    return gateway_pb2.ANALYSIS_KIND_SPECTRA


def summarise(result: dict) -> list[str]:
    if "class_fractions" in result:
        lines = [f"map {result['shape'][0]} x {result['shape'][1]} x {result['shape'][2]}"]
        lines += [f"  {name:<20} {100 * fraction:6.2f} %" for name, fraction in result["class_fractions"].items()]
        return lines
    lines = []
    for row in result["spectra"]:
        probs = "  ".join(f"{n} {p:.3f}" for n, p in row["probabilities"].items())
        lines.append(f"  #{row['index']:<4} {row['class']:<20} {probs}")
    if result["listed"] < result["n_spectra"]:
        lines.append(f"  ... {result['n_spectra'] - result['listed']} more in probabilities.npy")
    return lines


DOMAIN = Domain(
    name="spectra", title="Raman spectra and spectral maps", module="nanolens_spectra",
    stub=spectra_pb2_grpc.SpectraServiceStub, list_models_request=spectra_pb2.ListModelsRequest(),
    analyses=(Analysis(gateway_pb2.ANALYSIS_KIND_SPECTRA, "spectra", classify_spectra, OPTIONS,
                       result=SPECTRA_RESULT, doc="class of each spectrum; artefacts: probabilities.npy (N x "
                       "classes), spectra.png"),
              Analysis(gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP, "spectral_map", classify_map, OPTIONS,
                       result=MAP_RESULT, doc="class of each pixel of a spectral map; artefacts: class_map.npy "
                       "(H x W), probabilities.npy (H x W x classes), class_map.png, probability_maps.png")),
    summarise=summarise, default_addr="127.0.0.1:50051", choose=choose,
    file_help="spectra (two-column text/CSV, CSV matrix, .npy/.npz N x C) or a spectral map (H x W x C .npy/.npz)",
    cli_flags=(("--map", {"action": "store_true",
                          "help": "treat the file as a spectral map (automatic for 3-D arrays)"}),))
