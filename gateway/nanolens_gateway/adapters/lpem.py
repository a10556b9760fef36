"""Liquid-phase EM movies as the gateway runs them: decode in chunks, stream to the LPEM service,
collect labels and tables, build the result.

Decoding happens here, not in the service: the gateway already owns the file formats and the
object store, the service then needs no storage credentials and no ffmpeg, and frames reach it as
plain arrays. The object is spooled to a temporary file block by block (TIFF and video decoders
need a seekable file), then read frame by frame, so memory is bounded by a chunk of frames
whatever the movie's length. Label images go to a compressed TIFF on disk as they arrive.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
from pathlib import Path

import grpc
import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens.lpem.v1 import lpem_pb2, lpem_pb2_grpc
from nanolens_formats.calibration import SOURCES
from nanolens_formats.files import suffix_of
from nanolens_formats.movies import checked_frames, greyscale_frame, open_movie
from nanolens_gateway.adapters import pictures
from nanolens_gateway.context import AnalysisContext, Outcome
from nanolens_gateway.domains import Analysis, Domain, Option, yes
from nanolens_gateway.results import Artefact
from nanolens_gateway.schema import array, boolean, integer, nullable, number, record, string
from nanolens_gateway.upstream import ServiceClient
from nanolens_runtime import arrays
from nanolens_runtime.errors import InvalidArgument

MAX_CHUNK_FRAMES = 16
PREVIEW_FRAMES = 60
PREVIEW_SIDE = 320

_NUM = nullable(number("value (null: not measurable)"))
RESULT = {
    "movie": record("the movie analysed", frames=integer("frames"), height=integer("pixels"), width=integer("pixels"),
                    pixel_size_nm=nullable(number("nm per pixel (null: unknown, lengths in pixels)")),
                    pixel_size_source=string("where the pixel size came from: request, the file's metadata or "
                                             "unknown", ["request", *SOURCES, "unknown"]),
                    fps=nullable(number("frames per second (null: unknown, times in frames)"))),
    "binning": record(
        "the binning the frames were segmented at (results are at full resolution)",
        factor=integer("n: blocks of n x n pixels"),
        source=string("request (the binning option) or movie (chosen from the first frame: the particle radius "
                      "the U-Net finds alike at two neighbouring binnings, brought to the middle of its trained "
                      "range)", ["request", "movie"]),
        typical_radius_px=nullable(number("that radius in the frames' own pixels (null: requested, or no radius "
                                          "held at two binnings and the frames ran unbinned)"))),
    "detections": integer("particle detections in tracks of 3 frames or more (one per particle and frame)"),
    "tracks": integer("tracks of 3 frames or more"),
    "pairs": integer("rows of the pairs table (pairs within the cutoff, per frame)"),
    "linking": record("the linking parameters used", search_range_px=number("largest step followed, px"),
                      memory_frames=integer("frames a particle may vanish"),
                      pair_cutoff_px=number("pair cutoff, px")),
    "diffusion": record(
        "ensemble diffusion of all tracks (drift removed)",
        d_px2_per_frame=_NUM, ci95_px2_per_frame=array(_NUM, "95 % bootstrap interval over tracks, px^2/frame"),
        d_um2_per_s=_NUM, ci95_um2_per_s=nullable(array(_NUM, "95 % interval, um^2/s")),
        msd_fit_d_px2_per_frame=_NUM, localisation_var_px2=_NUM, n_tracks=integer("tracks with steps"),
        n_steps=integer("step pairs used"), method=string("estimator")),
    "quality": record(
        "whether to trust the analysis: detections in noise neither persist nor stand out",
        trustworthy=boolean("false when any warning was raised"),
        linked_fraction=number("share of all detections in tracks of 3 frames or more (warning under 0.7)"),
        contrast_to_noise=number("median over frames of the detections' contrast over the background's noise "
                                 "(warning under 0.6)"),
        warnings=array(string("one reason"), "why not to trust the analysis; empty when it can be trusted")),
    "per_frame": record("per-frame statistics in brief (frames.csv has them all)", mean_particles=_NUM,
                        mean_diameter_px_first=_NUM, mean_diameter_px_last=_NUM,
                        max_cluster_size=integer("largest cluster of touching particles in any frame")),
    "track_list": array(record("one track", track=integer("track id"), first_frame=integer("first frame"),
                               n_frames=integer("frames spanned"), d_px2_per_frame=_NUM,
                               ci95_px2_per_frame=array(_NUM, "95 % interval"), mean_diameter_px=_NUM),
                        "the longest tracks first, at most NANOLENS_MAX_LISTED"),
}

OPTIONS = (
    Option("pixel_size_nm", "pixel size in nm (else the file's metadata; else lengths in px)", "positive_number",
           flag="--pixel-size-nm"),
    Option("fps", "frames per second (else the video's rate; else diffusion per frame)", "positive_number",
           flag="--fps"),
    Option("bright_particles", "particles are brighter than the liquid", "yes_no", flag="--bright-particles"),
    Option("search_range_px", "largest step (px) between frames that linking follows (default 10)",
           "positive_number"),
    Option("memory_frames", "frames a particle may vanish and keep its track (default 3)", "positive_number"),
    Option("pair_cutoff_px", "list pairs closer than this, px (default 3 median diameters)", "positive_number"),
    Option("binning", "segment frames binned n x n (default: chosen from the first frame, so that the particles "
           "reach the U-Net at the sizes it was trained on)", "positive_number", flag="--binning"),
)


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


async def spool(ctx: AnalysisContext) -> Path:
    """The input object in a temporary file, fetched block by block (bounded memory)."""
    src = ctx.source
    fd, name = tempfile.mkstemp(suffix=suffix_of(src.key) or ".bin", prefix="nanolens-lpem-")

    def fetch():
        reader = ctx.store.open(src.bucket, src.key, src.version_id)
        try:
            with os.fdopen(fd, "wb") as out:
                left = src.size
                while left > 0:
                    chunk = reader.read_exactly(min(ctx.block_bytes, left))
                    out.write(chunk)
                    left -= len(chunk)
        finally:
            reader.close()

    with ctx.timer.stage("fetch"):
        try:
            await asyncio.to_thread(fetch)
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


class Collector:
    """What comes back from the service: labels (to a compressed TIFF on disk), table parts,
    preview frames; bounded memory apart from the tables."""

    def __init__(self, workdir: Path):
        import tifffile

        self.labels_path = workdir / "labels.tif"
        self.writer = tifffile.TiffWriter(self.labels_path, bigtiff=True)
        self.tables: dict[str, dict[str, list[np.ndarray]]] = {}
        self.preview: list[np.ndarray] = []
        self.preview_labels: list[np.ndarray] = []
        self.summary: lpem_pb2.MovieSummary | None = None

    def labels(self, chunk: lpem_pb2.LabelChunk) -> None:
        labels = arrays.from_proto(chunk.labels, "labels")
        for i, lab in enumerate(labels):
            self.writer.write(lab, compression="zlib", metadata=None)  # uniform pages: one T x H x W series
            if chunk.first_frame + i < PREVIEW_FRAMES:
                self.preview_labels.append(np.array(lab))

    def table(self, part: lpem_pb2.TablePart) -> None:
        cols = self.tables.setdefault(part.table, {})
        for c in part.columns:
            cols.setdefault(c.name, []).append(np.array(arrays.from_proto(c.values, c.name, finite=False)))

    def frame_table(self, name: str) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.tables.get(name, {}).items()}

    def close(self) -> None:
        self.writer.close()


def _table_bytes(table: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame(table)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
    return buf.getvalue(), df.to_csv(index=False, float_format="%.6g").encode()


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


async def movie(ctx: AnalysisContext, client: ServiceClient) -> Outcome:
    path = await spool(ctx)
    workdir = Path(tempfile.mkdtemp(prefix="nanolens-lpem-"))
    collector = Collector(workdir)
    movie_ = None
    try:
        with ctx.timer.stage("decode"):
            movie_ = await asyncio.to_thread(open_movie, path, ctx.source.key, ctx.max_pixels)
        requested_px = float(ctx.options.get("pixel_size_nm", 0.0))
        pixel_size = requested_px or movie_.pixel_size_nm
        fps = float(ctx.options.get("fps", 0.0)) or movie_.fps
        h, w = movie_.shape
        frame_bytes = max(h * w * 4, 1)
        per_chunk = int(max(1, min(MAX_CHUNK_FRAMES, ctx.block_bytes // frame_bytes)))
        header = lpem_pb2.MovieHeader(
            pixel_size_nm=pixel_size, fps=fps, frames_total=movie_.n_frames,
            model=common_pb2.ModelSelector(name=ctx.model.name, version=ctx.model.version),
            bright_particles=yes(ctx.options, "bright_particles"),
            search_range_px=float(ctx.options.get("search_range_px", 0.0)),
            memory_frames=int(float(ctx.options.get("memory_frames", 0))),
            pair_cutoff_px=float(ctx.options.get("pair_cutoff_px", 0.0)),
            binning=int(float(ctx.options.get("binning", 0))))
        key = ctx.source.key

        def next_chunk(index: list[int]) -> np.ndarray | None:
            frames = []
            for f in checked_frames(movie_.frames, key):
                frame = greyscale_frame(np.asarray(f), key, index[0])
                if frames and frame.shape != frames[0].shape or frame.shape != movie_.shape:
                    raise _bad(f"{key}: frame {index[0]} is {frame.shape[1]} x {frame.shape[0]} px; the movie's "
                               f"frames are {movie_.shape[1]} x {movie_.shape[0]} (mixed frame sizes)")
                if index[0] < PREVIEW_FRAMES:
                    collector.preview.append(thumbnail(frame, PREVIEW_SIDE))
                index[0] += 1
                frames.append(frame)
                if len(frames) == per_chunk:
                    break
            if not frames:
                return None
            dtypes = {f.dtype for f in frames}
            return np.stack(frames) if len(dtypes) == 1 else np.stack(frames).astype(np.float32)

        async def chunks():
            index = [0]
            while True:
                with ctx.timer.stage("decode"):
                    chunk = await asyncio.to_thread(next_chunk, index)
                if chunk is None:
                    return
                yield chunk

        async def on_response(response) -> None:
            part = response.WhichOneof("part")
            if part == "labels":
                await asyncio.to_thread(collector.labels, response.labels)
            elif part == "progress":
                p = response.progress
                ctx.report("analyse", p.frames_done, p.frames_total, particles=p.particles_found, tracks=p.tracks)
            elif part == "table":
                collector.table(response.table)
            elif part == "summary":
                collector.summary = response.summary

        with client.errors():
            await stream_movie(client.stub, header, chunks(), on_response, ctx.remaining())
        summary = collector.summary
        if summary is None:
            raise _bad(f"{key}: the LPEM service ended the stream without a result")
        ctx.absorb(summary.provenance)
        with ctx.timer.stage("postprocess"):
            collector.close()
            tables = {n: collector.frame_table(n) for n in ("tracks", "track_summary", "pairs", "frames", "msd")}
            doc = summary_doc(summary, tables, pixel_size, fps, movie_, ctx, requested_px)
            artefacts = await asyncio.to_thread(pictures.one_at_a_time, build_artefacts, collector, tables, summary,
                                            pixel_size, fps)
        return Outcome(doc, artefacts)
    finally:
        collector.close()
        if movie_ is not None:
            movie_.close()
        path.unlink(missing_ok=True)  # noqa: ASYNC240 (local temporary files)
        shutil.rmtree(workdir, ignore_errors=True)


async def stream_movie(stub, header: lpem_pb2.MovieHeader, chunks, on_response, deadline_s: float | None) -> None:
    """The AnalyzeMovie protocol from the caller's side: the header, then one chunk of frames
    after each Progress message (the service acknowledges the header and every chunk with one),
    so the caller never writes while the service refuses: a refusal always reaches the caller
    with its status and field. ``chunks``: async iterator of T x H x W arrays; ``on_response``:
    awaited with every response."""
    call = stub.AnalyzeMovie(timeout=deadline_s)
    try:
        await call.write(lpem_pb2.AnalyzeMovieRequest(header=header))
        writing = True
        source = chunks.__aiter__()
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                break
            if writing and response.WhichOneof("part") == "progress":
                try:
                    chunk = await source.__anext__()
                except StopAsyncIteration:
                    writing = False
                    await call.done_writing()
                else:
                    await call.write(lpem_pb2.AnalyzeMovieRequest(frames=arrays.to_proto(chunk)))
            await on_response(response)
        code = await call.code()
        if code != grpc.StatusCode.OK:  # read() ends with EOF on some failures instead of raising
            raise grpc.aio.AioRpcError(code, await call.initial_metadata(), await call.trailing_metadata(),
                                       await call.details())
    finally:
        call.cancel()


def summary_doc(summary, tables, pixel_size, fps, movie_, ctx: AnalysisContext, requested_px: float) -> dict:
    d = summary.diffusion
    ts = tables["track_summary"]
    order = np.argsort(-ts["n_frames"]) if len(ts.get("track", [])) else np.zeros(0, int)
    scale = (pixel_size * 1e-3) ** 2 * fps if pixel_size and fps else 0.0
    frames = tables["frames"]
    return {
        "movie": {"frames": summary.frames, "height": summary.height, "width": summary.width,
                  "pixel_size_nm": pixel_size or None,
                  "pixel_size_source": "request" if requested_px else (movie_.pixel_size_source or "unknown"),
                  "fps": fps or None},
        "binning": {"factor": summary.binning.factor, "source": summary.binning.source,
                    "typical_radius_px": _finite(summary.binning.typical_radius_px)},
        "detections": summary.detections, "tracks": summary.tracks, "pairs": summary.pairs,
        "quality": {"trustworthy": summary.quality.trustworthy,
                    "linked_fraction": round(summary.quality.linked_fraction, 4),
                    "contrast_to_noise": round(summary.quality.contrast_to_noise, 3),
                    "warnings": list(summary.quality.warnings)},
        "linking": {"search_range_px": summary.search_range_px, "memory_frames": summary.memory_frames,
                    "pair_cutoff_px": round(summary.pair_cutoff_px, 3)},
        "diffusion": {"d_px2_per_frame": _finite(d.d_px2_per_frame),
                      "ci95_px2_per_frame": [_finite(d.d_low_px2_per_frame), _finite(d.d_high_px2_per_frame)],
                      "d_um2_per_s": _finite(d.d_um2_per_s) if scale else None,
                      "ci95_um2_per_s": [_finite(d.d_low_um2_per_s), _finite(d.d_high_um2_per_s)] if scale else None,
                      "msd_fit_d_px2_per_frame": _finite(d.msd_d_px2_per_frame),
                      "localisation_var_px2": _finite(d.localisation_var_px2),
                      "n_tracks": d.n_tracks, "n_steps": d.n_steps,
                      "method": "covariance-based estimator, drift removed; 95 % bootstrap interval over tracks"},
        "per_frame": {"mean_particles": _finite(float(np.mean(frames["n_particles"]))) if frames else None,
                      "mean_diameter_px_first": _finite(float(frames["mean_diameter"][0])) if frames else None,
                      "mean_diameter_px_last": _finite(float(frames["mean_diameter"][-1])) if frames else None,
                      "max_cluster_size": int(np.max(frames["max_cluster_size"])) if frames else 0},
        "track_list": [
            {"track": int(ts["track"][i]), "first_frame": int(ts["first_frame"][i]),
             "n_frames": int(ts["n_frames"][i]), "d_px2_per_frame": _finite(ts["d"][i]),
             "ci95_px2_per_frame": [_finite(ts["d_low"][i]), _finite(ts["d_high"][i])],
             "mean_diameter_px": _finite(ts["mean_diameter"][i])}
            for i in order[:ctx.max_listed]],
    }


def build_artefacts(collector: Collector, tables, summary, pixel_size: float, fps: float) -> list[Artefact]:
    out = []
    for name in ("tracks", "pairs", "track_summary", "frames", "msd"):
        parquet, csv = _table_bytes(tables[name])
        out += [Artefact(f"{name}.parquet", parquet, "application/vnd.apache.parquet"),
                Artefact(f"{name}.csv", csv, "text/csv")]
    out.append(Artefact("labels.tif", collector.labels_path.read_bytes(), "image/tiff"))
    first = collector.preview[0] if collector.preview else np.zeros((summary.height, summary.width), np.uint8)
    out.append(Artefact("trajectories.png", trajectories_png(first, tables["tracks"], summary, pixel_size),
                        "image/png"))
    out.append(Artefact("msd.png", msd_png(tables["msd"], summary.diffusion, pixel_size, fps), "image/png"))
    out.append(Artefact("size_vs_time.png", size_png(tables["frames"], pixel_size, fps), "image/png"))
    out.append(Artefact("clusters_vs_time.png", clusters_png(tables["frames"], fps), "image/png"))
    out.append(Artefact("preview.gif", preview_gif(collector.preview, collector.preview_labels,
                                                        tables["tracks"], summary), "image/gif"))
    return out


# -- pictures ----------------------------------------------------------------------------------

def thumbnail(frame: np.ndarray, side: int) -> np.ndarray:
    """uint8 copy of a frame scaled (nearest) so that its longer side is at most ``side``."""
    step = max(1, int(np.ceil(max(frame.shape) / side)))
    small = np.asarray(frame[::step, ::step], np.float32)
    lo, hi = np.percentile(small, (1, 99))
    return (np.clip((small - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trajectories_png(first: np.ndarray, tracks: dict, summary, pixel_size: float = 0.0) -> bytes:
    return _figure_png(trajectories_figure(first, tracks, summary, pixel_size))


def trajectories_figure(first: np.ndarray, tracks: dict, summary, pixel_size: float = 0.0):
    """Every track over the first frame, with a scale bar when the pixel size (nm) is known."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6 * summary.height / max(summary.width, 1)))
    ax.imshow(first, cmap="gray", extent=(0, summary.width, summary.height, 0))
    if len(tracks.get("track", [])):
        order = np.lexsort((tracks["frame"], tracks["track"]))
        t, r, c = tracks["track"][order], tracks["row"][order], tracks["col"][order]
        cuts = np.flatnonzero(np.diff(t)) + 1
        colours = plt.get_cmap("tab20")
        for k, (rr, cc) in enumerate(zip(np.split(r, cuts), np.split(c, cuts), strict=True)):
            ax.plot(cc, rr, lw=0.8, color=colours(k % 20))
    ax.set_title(f"{summary.tracks} tracks over {summary.frames} frames")
    ax.set_axis_off()
    if pixel_size:
        from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

        length_nm = pictures.scale_bar_nm(summary.width, pixel_size)
        label = f"{length_nm:g} nm" if length_nm < 1000 else f"{length_nm / 1000:g} µm"
        ax.add_artist(AnchoredSizeBar(ax.transData, length_nm / pixel_size, label, "lower right", color="white",
                                      frameon=True, size_vertical=max(1.0, summary.height / 100)))
        ax.artists[-1].patch.set_facecolor("black")
    return fig


def msd_png(msd: dict, d, pixel_size: float = 0.0, fps: float = 0.0) -> bytes:
    return _figure_png(msd_figure(msd, d, pixel_size, fps))


def msd_figure(msd: dict, d, pixel_size: float = 0.0, fps: float = 0.0):
    """The ensemble MSD against lag with the diffusion fit, in nm^2 and s when the pixel size and the
    frame rate are known (else px^2 and frames)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    per_frame = 1.0 / fps if fps else 1.0  # s per frame
    area, area_unit = (pixel_size ** 2, "nm$^2$") if pixel_size else (1.0, "px$^2$")
    time_unit = "s" if fps else "frames"
    ok = np.isfinite(msd.get("msd_px2", np.zeros(0))) & (msd.get("msd_px2", np.zeros(0)) > 0)
    if ok.any():
        lag, y = msd["lag"][ok], msd["msd_px2"][ok]
        ax.loglog(lag * per_frame, y * area, "o", ms=4, label="ensemble MSD (drift removed)")
        fit = (4 * d.d_px2_per_frame * lag + 4 * d.localisation_var_px2) * area
        rate = d.d_px2_per_frame * area / per_frame
        ax.loglog(lag * per_frame, fit, "-",
                  label=f"4 D t + 4 $\\sigma^2$, D = {rate:.3g} {area_unit}/{'s' if fps else 'frame'}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"lag ({time_unit})")
    ax.set_ylabel(f"MSD ({area_unit})")
    return fig


def size_png(frames: dict, pixel_size: float, fps: float) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if frames:
        t = frames["frame"] / fps if fps else frames["frame"]
        scale, unit = (pixel_size, "nm") if pixel_size else (1.0, "px")
        ax.plot(t, frames["mean_diameter"] * scale)
        ax.set_ylabel(f"mean equivalent diameter ({unit})")
        ax.set_xlabel("time (s)" if fps else "frame")
    return _figure_png(fig)


def clusters_png(frames: dict, fps: float) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if frames:
        t = frames["frame"] / fps if fps else frames["frame"]
        ax.plot(t, frames["mean_cluster_size"], label="mean cluster size (per particle)")
        ax.plot(t, frames["max_cluster_size"], label="largest cluster")
        ax.plot(t, frames["coordination"], label="mean coordination")
        ax.legend(fontsize=8)
        ax.set_xlabel("time (s)" if fps else "frame")
    return _figure_png(fig)


def preview_gif(frames: list[np.ndarray], labels: list[np.ndarray], tracks: dict, summary) -> bytes:
    """The first frames with each track's last 10 positions drawn and its id written."""
    from PIL import Image, ImageDraw

    if not frames:
        return b""
    step = summary.height / frames[0].shape[0] if frames[0].shape[0] else 1.0
    by_frame: dict[int, list[tuple[int, float, float]]] = {}
    if len(tracks.get("track", [])):
        early = tracks["frame"] < len(frames)
        for f, t, r, c in zip(tracks["frame"][early], tracks["track"][early], tracks["row"][early],
                              tracks["col"][early], strict=True):
            by_frame.setdefault(int(f), []).append((int(t), r / step, c / step))
    history: dict[int, list[tuple[float, float]]] = {}
    out = []
    for i, frame in enumerate(frames):
        img = Image.fromarray(frame).convert("RGB")
        draw = ImageDraw.Draw(img)
        for t, r, c in by_frame.get(i, []):
            pts = history.setdefault(t, [])
            pts.append((c, r))
            del pts[:-10]
            hue = (t * 67) % 255
            colour = (255, hue, 255 - hue)
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=1)
            draw.text((c + 3, r - 3), str(t), fill=colour)
        out.append(img)
    buf = io.BytesIO()
    out[0].save(buf, format="GIF", save_all=True, append_images=out[1:], duration=100, loop=0)
    return buf.getvalue()


def summarise(result: dict) -> list[str]:
    m, d = result["movie"], result["diffusion"]
    unit = (f"{d['d_um2_per_s']:.4g} um^2/s (95 % CI {d['ci95_um2_per_s'][0]:.4g}-{d['ci95_um2_per_s'][1]:.4g})"
            if d.get("d_um2_per_s") is not None else
            f"{d['d_px2_per_frame']:.4g} px^2/frame (95 % CI {d['ci95_px2_per_frame'][0]}-{d['ci95_px2_per_frame'][1]})"
            if d.get("d_px2_per_frame") is not None else "not measurable")
    b = result.get("binning") or {}
    binned = f"binned {b['factor']} x {b['factor']} " + ("(requested)" if b["source"] == "request" else
                                                      "(chosen from the movie)") if b else ""
    return [f"{m['frames']} frames of {m['width']} x {m['height']} px{', ' + binned if binned else ''}: "
            f"{result['detections']} detections in {result['tracks']} tracks, {result['pairs']} pair rows",
            f"  ensemble D {unit} over {d['n_tracks']} tracks, {d['n_steps']} steps"]


DOMAIN = Domain(
    name="lpem", title="particles tracked in liquid-phase EM movies", module="nanolens_lpem",
    stub=lpem_pb2_grpc.LpemServiceStub, list_models_request=lpem_pb2.ListModelsRequest(),
    analyses=(Analysis(gateway_pb2.ANALYSIS_KIND_LPEM_MOVIE, "lpem_movie", movie, OPTIONS, result=RESULT,
                       doc="particles segmented and tracked in a liquid-phase EM movie, with their diffusion, "
                           "pairs, sizes and clusters over time; artefacts: tracks, pairs, track_summary, frames "
                           "and msd tables (.parquet, .csv), labels.tif, trajectories.png, msd.png, "
                           "size_vs_time.png, clusters_vs_time.png, preview.gif"),),
    summarise=summarise, file_help="a movie (TIFF or DM3/DM4 stack, MP4/MOV/AVI, .npy T x H x W)", progress=True)
