"""The LPEM service: movies in chunks of frames -> instances, tracks and dynamics, as a stream.

A movie arrives as a stream of chunks (the gateway decodes the container, see docs/lpem.md);
each chunk is segmented by the U-Net (``science.segmentation``) in the inference pool, linked
to the tracks so far (``science.tracking``, state bounded by the particles in view), and
answered with progress and its label images. At the end the dynamics (``science.dynamics``)
are computed from the compact per-detection table (12 numbers per particle and frame; the
frames and label images are not kept) and sent as table parts and a summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import Counter

from nanolens.lpem.v1 import lpem_pb2, lpem_pb2_grpc
from nanolens_lpem.science import dynamics, quality
from nanolens_lpem.science.segmentation import COLUMNS, BinningChoice, choose_binning, segment_frames
from nanolens_lpem.science.tracking import StreamLinker
from nanolens_runtime import arrays, metrics
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import Servicer
from nanolens_runtime.service import DomainService, DomainServicer, Pipeline

SERVICE = "lpem"
MODEL = "lpem-unet"
TASKS = ("lpem-segmentation",)
LPEM = DomainService(SERVICE, TASKS, MODEL, Path(__file__).resolve().parent,
                     libraries=("numpy", "scipy", "scikit-image", "onnxruntime", "trackpy", "pandas"))
SHIPPED_BUNDLES = LPEM.bundles
FULL_NAME = lpem_pb2.DESCRIPTOR.services_by_name["LpemService"].full_name
MAX_PIXEL_SIZE_NM = 1000.0  # an EM movie of nanoparticles at more than 1 um per pixel shows none
MAX_FPS = 1e5
MAX_MEMORY = 50
MAX_SEARCH_PX = 500.0
MAX_BINNING = 16
ROWS_PER_PART = 50_000
MIN_TRACK_FRAMES = 3
TRACK_COLUMNS = ("frame", "track", *COLUMNS[1:], "label")

frames_counter = Counter("nanolens_lpem_frames_total", "Movie frames segmented and linked.", ("service",))
particles_counter = Counter("nanolens_lpem_particles_total", "Particle detections linked into tracks.",
                            ("service",))


def serving_code_sha256() -> str:
    return LPEM.code_sha256()


@dataclass
class Settings:
    """A movie's analysis parameters after defaults and checks."""

    pixel_size_nm: float = 0.0
    fps: float = 0.0
    frames_total: int = 0
    bright: bool = False
    search_range_px: float = 10.0
    memory_frames: int = 3
    pair_cutoff_px: float = 0.0
    binning: int = 0  # 0: chosen from the first frame


def settings_from(header: lpem_pb2.MovieHeader) -> Settings:
    """Check the header; every refusal names its field."""
    def finite(value: float, name: str, upper: float) -> float:
        if not math.isfinite(value) or value < 0 or value > upper:
            raise InvalidArgument(f"{name} must be between 0 and {upper:g}, got {value}", field=f"header.{name}")
        return float(value)

    px = finite(header.pixel_size_nm, "pixel_size_nm", MAX_PIXEL_SIZE_NM)
    fps = finite(header.fps, "fps", MAX_FPS)
    search = finite(header.search_range_px, "search_range_px", MAX_SEARCH_PX) or 10.0
    cutoff = finite(header.pair_cutoff_px, "pair_cutoff_px", 1e4)
    if not 0 <= header.memory_frames <= MAX_MEMORY:
        raise InvalidArgument(f"memory_frames must be 0..{MAX_MEMORY}, got {header.memory_frames}",
                              field="header.memory_frames")
    if not 0 <= header.binning <= MAX_BINNING:
        raise InvalidArgument(f"binning must be 0 (chosen from the movie) to {MAX_BINNING}, got {header.binning}",
                              field="header.binning")
    if header.frames_total < 0:
        raise InvalidArgument(f"frames_total must be >= 0, got {header.frames_total}", field="header.frames_total")
    return Settings(px, fps, int(header.frames_total), bool(header.bright_particles), search,
                    int(header.memory_frames or 3), cutoff, int(header.binning))


@dataclass
class MovieState:
    """What the service keeps while a movie streams: the linker and the per-detection rows."""

    settings: Settings
    linker: StreamLinker
    shape: tuple[int, int] | None = None
    frames_done: int = 0
    detections: int = 0
    rows: list[np.ndarray] = field(default_factory=list)  # float32 (K, len(TRACK_COLUMNS)) per frame
    contrast: list[float] = field(default_factory=list)  # per frame, quality.frame_contrast
    binning: BinningChoice | None = None  # the request's, or chosen on the first chunk

    def add(self, segs, frames: np.ndarray) -> np.ndarray:
        """Link one chunk's detections (blocking); returns its labels (T x H x W uint16)."""
        labels = []
        for seg, frame in zip(segs, frames, strict=True):
            self.contrast.append(quality.frame_contrast(frame, seg.labels))
            table = seg.table
            ids = self.linker.link(table[:, 1:3]) if len(table) else self.linker.link(np.zeros((0, 2)))
            block = np.empty((len(table), len(TRACK_COLUMNS)), np.float32)
            block[:, 0] = self.frames_done
            block[:, 1] = ids
            block[:, 2:-1] = table[:, 1:]
            block[:, -1] = table[:, 0]
            self.rows.append(block)
            self.detections += len(table)
            self.frames_done += 1
            if seg.labels.max(initial=0) > np.iinfo(np.uint16).max:
                raise ResourceExhausted(f"frame {self.frames_done - 1} holds more than 65535 particles")
            labels.append(seg.labels.astype(np.uint16))
        return np.stack(labels)

    def table(self) -> dict[str, np.ndarray]:
        arr = np.concatenate(self.rows) if self.rows else np.zeros((0, len(TRACK_COLUMNS)), np.float32)
        out = {name: arr[:, i].astype(np.float64) for i, name in enumerate(TRACK_COLUMNS)}
        for name in ("frame", "track", "label"):
            out[name] = arr[:, TRACK_COLUMNS.index(name)].astype(np.int64)
        return out


@dataclass
class MovieResult:
    tracks: dict[str, np.ndarray]
    track_summary: dict[str, np.ndarray]
    pairs: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]
    msd: dict[str, np.ndarray]
    diffusion: dynamics.Diffusion
    pair_cutoff_px: float
    linked_fraction: float  # share of all detections in tracks of >= MIN_TRACK_FRAMES frames


def analyse(state: MovieState) -> MovieResult:
    """The dynamics of a finished movie (blocking). Tracks of fewer than ``MIN_TRACK_FRAMES``
    detections (noise, a particle glimpsed at the edge) are left out of every table."""
    table = state.table()
    n = state.frames_done
    counts = np.bincount(table["track"], minlength=1)
    keep = counts[table["track"]] >= MIN_TRACK_FRAMES
    table = {k: v[keep] for k, v in table.items()}
    if not keep.any():
        raise InvalidArgument(f"no particles found in {n} frames (no track of {MIN_TRACK_FRAMES} frames or more): "
                              "is the contrast inverted (bright_particles) or is the movie empty?", field="frames")
    shift = dynamics.drift(table, n)
    corrected = dict(table, row=table["row"] - shift[table["frame"], 0], col=table["col"] - shift[table["frame"], 1])
    diff = dynamics.diffusion(table, shift)
    cutoff = state.settings.pair_cutoff_px or 3.0 * float(np.median(table["diameter"]))
    pair_table = dynamics.pairs(table, cutoff)
    per_frame = dynamics.clusters(table, n)
    per_frame["drift_row"], per_frame["drift_col"] = shift[:, 0], shift[:, 1]
    tracks = dict(table, row_corrected=corrected["row"], col_corrected=corrected["col"])
    msd = {"lag": diff.lags.astype(np.int64), "msd_px2": diff.msd, "n": diff.msd_count}
    return MovieResult(tracks, diff.tracks, pair_table, per_frame, msd, diff, cutoff, float(keep.mean()))


def table_parts(name: str, table: dict[str, np.ndarray]):
    n = len(next(iter(table.values()))) if table else 0
    for start in range(0, max(n, 1), ROWS_PER_PART):
        yield lpem_pb2.TablePart(table=name, columns=[
            lpem_pb2.Column(name=k, values=arrays.to_proto(np.ascontiguousarray(v[start:start + ROWS_PER_PART])))
            for k, v in table.items()])


def diffusion_message(d: dynamics.Diffusion, s: Settings) -> lpem_pb2.Diffusion:
    scale = (s.pixel_size_nm * 1e-3) ** 2 * s.fps if s.pixel_size_nm and s.fps else 0.0

    def num(x: float) -> float:
        return float(x) if math.isfinite(x) else 0.0

    return lpem_pb2.Diffusion(
        d_px2_per_frame=num(d.d), d_low_px2_per_frame=num(d.d_low), d_high_px2_per_frame=num(d.d_high),
        d_um2_per_s=num(d.d * scale), d_low_um2_per_s=num(d.d_low * scale), d_high_um2_per_s=num(d.d_high * scale),
        localisation_var_px2=num(d.sigma2), msd_d_px2_per_frame=num(d.msd_d), msd_offset_px2=num(d.msd_offset),
        n_tracks=d.n_tracks, n_steps=d.n_steps)


class LpemPipeline(Pipeline):
    """predict: the U-Net's instances and measurements of one chunk of frames."""

    def __init__(self, registry: ModelRegistry, pool: InferencePool):
        super().__init__(LPEM, registry, pool)

    def predict(self, request, model: OnnxModel, run_options: ort.RunOptions):
        frames, bright, binning = request
        if min(frames.shape[1:]) // binning < 16:
            raise InvalidArgument(f"binning {binning} leaves frames under 16 px", field="header.binning")
        return segment_frames(model.session, frames, dark_particles=not bright, run_options=run_options,
                              binning=binning)


def check_frames(message, shape: tuple[int, int] | None, first: bool) -> np.ndarray:
    chunk = arrays.from_proto(message, "frames")
    if chunk.ndim == 2:
        chunk = chunk[None]
    if chunk.ndim != 3 or chunk.shape[0] == 0:
        raise InvalidArgument(f"frames must be T x H x W, got shape {list(chunk.shape)}", field="frames.shape")
    if min(chunk.shape[1:]) < 16:
        raise InvalidArgument(f"frames must be at least 16 x 16 px, got {list(chunk.shape[1:])}",
                              field="frames.shape")
    if chunk.dtype.kind not in "uf" or chunk.dtype.itemsize > 4:
        raise InvalidArgument(f"frames dtype {chunk.dtype} is not uint8, uint16 or float32", field="frames.dtype")
    if shape is not None and tuple(chunk.shape[1:]) != shape:
        raise InvalidArgument(f"every frame must be {shape[1]} x {shape[0]} px like the first; a chunk has "
                              f"{chunk.shape[2]} x {chunk.shape[1]}", field="frames.shape")
    if first:
        arrays.require_micrograph_levels(chunk[0], "frames", "the first frame")
    return chunk


class LpemServicer(DomainServicer, lpem_pb2_grpc.LpemServiceServicer):
    list_response = lpem_pb2.ListModelsResponse

    async def AnalyzeMovie(self, request_iterator, context):
        timer = metrics.StageTimer()
        it = request_iterator.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("no header: an empty stream is not a movie", field="header") from None
        if first.WhichOneof("part") != "header":
            raise InvalidArgument("the first message must be the header", field="header")
        s = settings_from(first.header)
        with timer.stage("model"):
            model = await self.pipeline.model(first.header.model.name, first.header.model.version)
        if model.bundle.task not in TASKS:
            raise InvalidArgument(f"model {model.key} has task {model.bundle.task}, not {TASKS[0]}",
                                  field="header.model.name")
        state = MovieState(s, StreamLinker(s.search_range_px, s.memory_frames))
        # the header is accepted: callers send a chunk after each Progress (see lpem.proto)
        yield lpem_pb2.AnalyzeMovieResponse(progress=lpem_pb2.Progress(frames_total=s.frames_total))
        try:
            async for message in it:
                if message.WhichOneof("part") != "frames":
                    raise InvalidArgument("header sent twice", field="header")
                with timer.stage("decode"):
                    chunk = check_frames(message.frames, state.shape, state.shape is None)
                state.shape = tuple(chunk.shape[1:])
                first_frame = state.frames_done
                if state.binning is None:
                    state.binning = BinningChoice(s.binning, "request") if s.binning else \
                        await self.pipeline.pool.call(choose_binning, model.session, chunk[0], not s.bright)
                segs = await self.pipeline.run((chunk, s.bright, state.binning.binning), model, timer,
                                               context.time_remaining())
                with timer.stage("postprocess"):
                    before = state.detections
                    labels = await self.pipeline.pool.call(state.add, segs, chunk)
                frames_counter.labels(SERVICE).inc(len(chunk))
                particles_counter.labels(SERVICE).inc(state.detections - before)
                yield lpem_pb2.AnalyzeMovieResponse(labels=lpem_pb2.LabelChunk(
                    first_frame=first_frame, labels=arrays.to_proto(labels)))
                yield lpem_pb2.AnalyzeMovieResponse(progress=lpem_pb2.Progress(
                    frames_done=state.frames_done, frames_total=s.frames_total, particles_found=state.detections,
                    tracks=state.linker.n_tracks))
        finally:
            state.linker.close()
        if state.frames_done < 2:
            raise InvalidArgument(f"a movie needs at least 2 frames to track anything, got {state.frames_done}",
                                  field="frames")
        if state.detections == 0:
            raise InvalidArgument(f"no particles found in {state.frames_done} frames: is the contrast inverted "
                                  "(bright_particles) or is the movie empty?", field="frames")
        with timer.stage("postprocess"):
            result = await self.pipeline.pool.call(analyse, state)
        for name in ("tracks", "track_summary", "pairs", "frames", "msd"):
            for part in table_parts(name, getattr(result, name)):
                yield lpem_pb2.AnalyzeMovieResponse(table=part)
        h, w = state.shape
        yield lpem_pb2.AnalyzeMovieResponse(summary=lpem_pb2.MovieSummary(
            frames=state.frames_done, height=h, width=w, detections=len(result.tracks["frame"]),
            tracks=len(result.track_summary["track"]), pairs=len(result.pairs["frame"]),
            diffusion=diffusion_message(result.diffusion, s), search_range_px=s.search_range_px,
            memory_frames=s.memory_frames, pair_cutoff_px=result.pair_cutoff_px,
            provenance=LPEM.provenance(model, timer), quality=quality_message(result, state),
            binning=lpem_pb2.Binning(factor=state.binning.binning, source=state.binning.source,
                                     typical_radius_px=state.binning.typical_radius_px)))


def quality_message(result: MovieResult, state: MovieState) -> lpem_pb2.MovieQuality:
    contrast = float(np.median(state.contrast)) if state.contrast else 0.0
    warnings = quality.judge(result.linked_fraction, contrast)
    return lpem_pb2.MovieQuality(linked_fraction=result.linked_fraction, contrast_to_noise=contrast,
                                 trustworthy=not warnings, warnings=list(warnings))


def servicer(pipeline: LpemPipeline) -> Servicer:
    return Servicer(LpemServicer(pipeline), lpem_pb2_grpc.add_LpemServiceServicer_to_server, FULL_NAME)
