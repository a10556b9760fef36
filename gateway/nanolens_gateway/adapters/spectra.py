"""Spectra analyses as the gateway runs them: fetch, decode, call the service, build the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

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
from nanolens_gateway.schema import array, boolean, integer, mapping, nullable, number, record, string
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime import arrays
from nanolens_runtime.errors import InvalidArgument

NPY_HEADER_READ = 4096
OPTIONS = (Option("array_key", "the array of an .npz file holding the spectra (default: 'spectra' or the only one)"),)
#: spectra.png costs a few ms of CPU (PIL), still a hundred times the classification of one
#: spectrum in a batch: callers sending many single spectra may leave it out
SPECTRA_OPTIONS = (*OPTIONS, Option("numbers_only", "leave spectra.png out (result.json and probabilities.npy "
                                                    "hold every number)", "yes_no"))


def selector(ctx: AnalysisContext) -> spectra_pb2.ModelSelector:
    return spectra_pb2.ModelSelector(name=ctx.model.name, version=ctx.model.version)


#: A map is untrusted when more of its pixels than this are out of domain: a few noisy pixels are
#: expected (the score flags about 1 % of spectra like the training data), a region is not.
MAP_OUT_OF_DOMAIN_WARNING = 0.05

_CLASS_NAMES = array(string("class"), "the model's classes, in its output order")
_OOD = ("the model's out-of-domain score (Hotelling T^2 and Q residual in its PCA, calibrated on held-out "
        "training spectra; about 1 % of spectra like the training data score above 1)")


def _quality(doc: str, **fields) -> dict:
    return record(f"whether to trust the classes: {doc}", trustworthy=boolean("false when any warning was raised"),
                  **fields, warnings=array(string("one reason"),
                                           "why not to trust the result; empty when it can be trusted"))


SPECTRA_RESULT = {
    "n_spectra": integer("spectra classified"),
    "class_names": _CLASS_NAMES,
    "class_counts": mapping(integer("spectra"), "spectra predicted in each class"),
    "spectra": array(record("one spectrum (the first NANOLENS_MAX_LISTED)", index=integer("row in the input"),
                            **{"class": string("predicted class (highest probability)")},
                            probabilities=mapping(number("0..1"), "probability of each class"),
                            ood_score=nullable(number(f"{_OOD}; null: the model has none")),
                            out_of_domain=boolean("ood_score above 1: unlike the training data, the class is a "
                                                  "guess")),
                     "per-spectrum predictions"),
    "listed": integer("how many spectra are listed in `spectra`"),
    "quality": _quality(
        "a classifier names a class for any spectrum, ones unlike its training data included",
        n_out_of_domain=nullable(integer("spectra with an out-of-domain score above 1 (warning when any); null: "
                                         "the model has no score")),
        max_ood_score=nullable(number(f"the highest {_OOD}"))),
}
MAP_RESULT = {
    "shape": array(integer("size"), "[height, width, channels] of the map"),
    "n_spectra": integer("pixels classified (height x width)"),
    "class_names": _CLASS_NAMES,
    "class_fractions": mapping(number("0..1"), "fraction of the pixels predicted in each class"),
    "class_colours": mapping(string("#rrggbb"), "the colour of each class in class_map.png"),
    "mean_max_probability": number("mean over pixels of the highest class probability (0..1)"),
    "out_of_domain_colour": string("#rrggbb: pixels unlike the training data in class_map.png"),
    "quality": _quality(
        "a classifier names a class for any pixel, ones unlike its training data included",
        out_of_domain_fraction=nullable(number(
            f"fraction of the pixels with an out-of-domain score above 1 (warning above "
            f"{MAP_OUT_OF_DOMAIN_WARNING}); null: the model has no score"))),
}


def _ood_array(scores, n: int) -> np.ndarray | None:
    """A response's ood_score as float32, None when the model sends none."""
    if len(scores) == 0:
        return None
    if len(scores) != n:
        raise RuntimeError(f"the spectra service sent {len(scores)} out-of-domain scores for {n} spectra")
    return np.asarray(scores, dtype=np.float32)


#: Silicon's first-order Raman band, the usual calibration standard, and how far off an axis may be.
SILICON_CM1, SILICON_TOLERANCE_CM1 = 520.7, 3.0


def silicon_offsets(spectra: np.ndarray, axis: np.ndarray | None) -> list[tuple[int, float]]:
    """(row, band centre in cm^-1) of the spectra whose strongest band is a sharp one near silicon's
    520.7 cm^-1 (470-570, at most 20 cm^-1 wide, 50 noise sd high) but more than 3 cm^-1 from it:
    a silicon reference on a wavenumber axis that is not calibrated."""
    if axis is None or len(axis) < 5:
        return []
    x = np.asarray(axis, np.float64)
    y = np.asarray(spectra, np.float64)
    heights = y - np.median(y, axis=1, keepdims=True)
    peaks = np.argmax(heights, axis=1)
    noise = 1.4826 * np.median(np.abs(np.diff(y, axis=1)), axis=1) / np.sqrt(2)
    tops = heights[np.arange(len(y)), peaks]
    sharp = ((x[peaks] >= 470) & (x[peaks] <= 570) & (peaks > 0) & (peaks < len(x) - 1)
             & (tops >= 50 * np.maximum(noise, 1e-12)))  # all rows at once: few are candidates
    out = []
    for row in np.flatnonzero(sharp):
        height, peak = heights[row], int(peaks[row])
        above = height >= height[peak] / 2
        lo, hi = peak, peak
        while lo > 0 and above[lo - 1]:
            lo -= 1
        while hi < len(x) - 1 and above[hi + 1]:
            hi += 1
        if abs(x[hi] - x[lo]) > 20:
            continue
        a, b, c = height[peak - 1:peak + 2]  # the top of a parabola through the three highest channels
        shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else 0.0
        centre = float(x[peak] + shift * (x[peak + 1] - x[peak - 1]) / 2)
        if abs(centre - SILICON_CM1) > SILICON_TOLERANCE_CM1:
            out.append((int(row), centre))
    return out


def spectra_quality(ood: np.ndarray | None, silicon: list[tuple[int, float]] = ()) -> dict:
    """The quality block of a list of spectra: untrusted when any is out of domain, or looks like
    silicon on an uncalibrated axis (``silicon_offsets``)."""
    warnings = [f"spectrum #{row}'s strongest band is a sharp one at {centre:.1f} cm^-1: if it is silicon "
                f"({SILICON_CM1} cm^-1), the wavenumber axis is off by {centre - SILICON_CM1:+.1f} cm^-1; calibrate it "
                "before trusting band positions or classes" for row, centre in silicon[:5]]
    if ood is None:
        return {"trustworthy": not warnings, "n_out_of_domain": None, "max_ood_score": None, "warnings": warnings}
    outside = np.flatnonzero(ood > 1)
    if len(outside):
        shown = ", ".join(f"#{i}" for i in outside[:10]) + (", ..." if len(outside) > 10 else "")
        warnings.append(f"{len(outside)} of {len(ood)} spectra are unlike the model's training data "
                        f"(out-of-domain score above 1, highest {float(ood.max()):.1f}): {shown}; "
                        "their classes are guesses")
    return {"trustworthy": not warnings, "n_out_of_domain": int(len(outside)),
            "max_ood_score": round(float(ood.max()), 4), "warnings": warnings}


def map_quality(ood: np.ndarray | None) -> dict:
    """The quality block of a map: untrusted when more than MAP_OUT_OF_DOMAIN_WARNING of it is out of domain."""
    if ood is None:
        return {"trustworthy": True, "out_of_domain_fraction": None, "warnings": []}
    fraction = float((ood > 1).mean())
    warnings = []
    if fraction > MAP_OUT_OF_DOMAIN_WARNING:
        warnings.append(f"{100 * fraction:.1f} % of the pixels are unlike the model's training data (out-of-domain "
                        f"score above 1; black in class_map.png): their classes are guesses")
    return {"trustworthy": not warnings, "out_of_domain_fraction": round(fraction, 6), "warnings": warnings}


async def _fetch_whole(ctx: AnalysisContext) -> SpectraData:
    data = await ctx.fetch()
    with ctx.timer.stage("decode"):
        return await asyncio.to_thread(decode_spectra, data, ctx.source.key, ctx.options)


def _summary(spectra: np.ndarray, axis: np.ndarray | None, probabilities: np.ndarray, ood: np.ndarray | None,
             class_names: list[str], max_listed: int) -> dict:
    predicted = probabilities.argmax(axis=1)
    return {
        "n_spectra": int(len(spectra)),
        "class_names": class_names,
        "class_counts": {name: int((predicted == i).sum()) for i, name in enumerate(class_names)},
        "spectra": [
            {"index": i, "class": class_names[predicted[i]],
             "probabilities": {n: round(float(p), 6) for n, p in zip(class_names, probabilities[i], strict=True)},
             "ood_score": None if ood is None else round(float(ood[i]), 4),
             "out_of_domain": bool(ood is not None and ood[i] > 1)}
            for i in range(min(len(spectra), max_listed))
        ],
        "listed": min(len(spectra), max_listed),
        "quality": spectra_quality(ood, silicon_offsets(spectra, axis)),
    }


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
    parts, ood_parts = [], []
    for start in range(0, len(spectra), rows):
        request = spectra_pb2.ClassifySpectraRequest(
            spectra=arrays.to_proto(spectra[start:start + rows]), axis=axis, model=selector(ctx))
        response = await client.unary("ClassifySpectra", request, ctx.remaining(), f"input {ctx.source.key!r}")
        ctx.absorb(response.provenance)
        parts.append(arrays.from_proto(response.probabilities, "probabilities"))
        ood_parts.append(_ood_array(response.ood_score, len(parts[-1])))
        class_names = list(response.class_names)
    with ctx.timer.stage("postprocess"):
        probabilities = np.concatenate(parts)
        ood = None if any(part is None for part in ood_parts) else np.concatenate(ood_parts)
        summary = await asyncio.to_thread(_summary, spectra, decoded.axis, probabilities, ood, class_names,
                                          ctx.max_listed)  # a Python loop per spectrum: off the event loop
        # made in worker threads as they are stored, the picture beside the numbers (PIL: no lock)
        artefacts = [Artefact("probabilities.npy", partial(pictures.npy_bytes, probabilities), "application/x-npy")]
        if ctx.options.get("numbers_only") != "true":
            artefacts.append(Artefact("spectra.png", partial(pictures.spectra_png, spectra, decoded.axis,
                                                             probabilities, class_names, ood), "image/png"))
        if ood is not None:
            artefacts.append(Artefact("ood_score.npy", partial(pictures.npy_bytes, ood), "application/x-npy"))
    return Outcome(summary, artefacts)


# -- maps ----------------------------------------------------------------------------------


class _MapSource:
    """Row blocks of an H x W x C map: streamed from one GET for ``.npy``, slices of a decoded array otherwise;
    or, for a ``.npy`` of NANOLENS_BY_REFERENCE_MB or more, no blocks: a URL the service reads itself."""

    def __init__(self, ctx: AnalysisContext, layout: NpyLayout | None, decoded: SpectraData | None,
                 reference: spectra_pb2.MapSource | None = None):
        self.ctx = ctx
        self.layout = layout
        self.decoded = decoded
        self.reference = reference  # set: the service reads the pixels itself
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
        reference = None
        if layout is not None and 0 < ctx.by_reference_bytes <= src.size:
            # read where it is computed: the caller's access was checked, the URL lives as long as the call
            expires = int(min(3600, max(60, ctx.remaining() or 900)))
            url = await asyncio.to_thread(ctx.store.presigned_get, src.bucket, src.key, src.version_id, expires)
            reference = spectra_pb2.MapSource(url=url, offset=layout.data_offset, dtype=layout.dtype.str,
                                              block_bytes=ctx.block_bytes)
        return cls(ctx, layout, decoded, reference)

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
        if self.reference is not None:
            header.source.CopyFrom(self.reference)
            yield spectra_pb2.ClassifyMapRequest(header=header)
            return
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
    probabilities = class_names = ood = None
    scored = True  # every block came with out-of-domain scores
    with client.errors():
        async for response in client.stub.ClassifyMap(source.requests(), timeout=ctx.remaining()):
            if response.HasField("provenance"):
                ctx.absorb(response.provenance)
                continue
            block = arrays.from_proto(response.probabilities, "probabilities")
            if probabilities is None:
                class_names = list(response.class_names)
                probabilities = np.empty((source.pixels, block.shape[1]), dtype=np.float32)
                ood = np.empty(source.pixels, dtype=np.float32)
            probabilities[response.offset:response.offset + len(block)] = block
            scores = _ood_array(response.ood_score, len(block))
            scored = scored and scores is not None
            if scored:
                ood[response.offset:response.offset + len(block)] = scores
    with ctx.timer.stage("postprocess"):
        prob_maps = probabilities.reshape(height, width, -1)
        ood_map = ood.reshape(height, width) if scored else None
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
            "out_of_domain_colour": "#{:02x}{:02x}{:02x}".format(*pictures.OUT_OF_DOMAIN_COLOUR),
            "quality": map_quality(ood_map),
        }
        outside = None if ood_map is None else ood_map > 1
        artefacts = [  # made in worker threads as they are stored (PIL alone: no lock)
            Artefact("class_map.npy", partial(pictures.npy_bytes, class_map), "application/x-npy"),
            Artefact("probabilities.npy", partial(pictures.npy_bytes, prob_maps), "application/x-npy"),
            Artefact("class_map.png", partial(pictures.class_map_png, class_map, class_names, outside), "image/png"),
            Artefact("probability_maps.png", partial(pictures.probability_maps_png, prob_maps, class_names),
                     "image/png"),
        ]
        if ood_map is not None:
            artefacts.append(Artefact("ood_score.npy", partial(pictures.npy_bytes, ood_map), "application/x-npy"))
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
        fraction = result.get("quality", {}).get("out_of_domain_fraction")
        if fraction is not None:
            lines.append(f"  {'(out of domain)':<20} {100 * fraction:6.2f} %")
        return lines
    lines = []
    for row in result["spectra"]:
        probs = "  ".join(f"{n} {p:.3f}" for n, p in row["probabilities"].items())
        flag = f"  OUT OF DOMAIN (score {row['ood_score']:.1f})" if row.get("out_of_domain") else ""
        lines.append(f"  #{row['index']:<4} {row['class']:<20} {probs}{flag}")
    if result["listed"] < result["n_spectra"]:
        lines.append(f"  ... {result['n_spectra'] - result['listed']} more in probabilities.npy")
    return lines


DOMAIN = Domain(
    name="spectra", title="Raman spectra and spectral maps", module="nanolens_spectra",
    stub=spectra_pb2_grpc.SpectraServiceStub, list_models_request=spectra_pb2.ListModelsRequest(),
    analyses=(Analysis(gateway_pb2.ANALYSIS_KIND_SPECTRA, "spectra", classify_spectra, SPECTRA_OPTIONS,
                       result=SPECTRA_RESULT, doc="class of each spectrum and how unlike the training data it is; "
                       "artefacts: probabilities.npy (N x classes), ood_score.npy (N), spectra.png (not with "
                       "numbers_only)"),
              Analysis(gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP, "spectral_map", classify_map, OPTIONS,
                       result=MAP_RESULT, doc="class of each pixel of a spectral map and how unlike the training "
                       "data it is; artefacts: class_map.npy (H x W), probabilities.npy (H x W x classes), "
                       "ood_score.npy (H x W), class_map.png (out-of-domain pixels black), "
                       "probability_maps.png")),
    summarise=summarise, default_addr="127.0.0.1:50051", choose=choose,
    file_help="spectra (two-column text/CSV, CSV matrix, .npy/.npz N x C) or a spectral map (H x W x C .npy/.npz)",
    cli_flags=(("--map", {"action": "store_true",
                          "help": "treat the file as a spectral map (automatic for 3-D arrays)"}),))
