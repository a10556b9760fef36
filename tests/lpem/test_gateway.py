"""Movies end to end: upload, AnalyzeStream through the gateway to the LPEM service (real
processes, S3 server on loopback), progress, stored tables and pictures, cancellation, bad files."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
import tifffile

from nanolens.gateway.v1 import gateway_pb2
from nanolens_lpem.synthetic.movies import MovieParams, generate
from support import upload

pytestmark = pytest.mark.slow
MOVIE = gateway_pb2.ANALYSIS_KIND_LPEM_MOVIE


@pytest.fixture(scope="module")
def frames():
    images, _, _ = generate(MovieParams(shape=(96, 96), n_frames=24, n_particles=8, contrast=0.35,
                                        radius_range=(4, 6)), seed=21)
    return images.astype(np.uint16)


def tiff(frames) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, frames)
    return out.getvalue()


def npy(frames) -> bytes:
    out = io.BytesIO()
    np.save(out, frames)
    return out.getvalue()


MP4_WRITER = """
import sys, numpy as np, imageio_ffmpeg
u8 = np.load(sys.argv[1])
writer = imageio_ffmpeg.write_frames(sys.argv[2], (u8.shape[2], u8.shape[1]), pix_fmt_in="gray", fps=10, quality=9,
                                     macro_block_size=16)
writer.send(None)
for f in u8:
    writer.send(np.ascontiguousarray(f))
writer.close()
"""


def mp4(frames) -> bytes:
    """H.264 in a fresh interpreter: ffmpeg started from this process after the in-process gRPC
    servers of the other LPEM tests wrote unreadable files."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        lo, hi = np.percentile(frames, (1, 99))
        np.save(Path(tmp) / "f.npy", (np.clip((frames - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
        subprocess.run([sys.executable, "-c", MP4_WRITER, str(Path(tmp) / "f.npy"), str(Path(tmp) / "m.mp4")],
                       check=True, timeout=120)
        return (Path(tmp) / "m.mp4").read_bytes()


def analyze_stream(gateway, ref, **options):
    events = list(gateway.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(
        request=gateway_pb2.AnalyzeRequest(input=ref, analysis=MOVIE, options=options)), timeout=180))
    assert events[-1].WhichOneof("event") == "result"
    return [e.progress for e in events[:-1]], events[-1].result


def dm4(frames, scale: float = 1.5) -> bytes:
    from dmfile import dm_image

    return dm_image(frames, scale=scale, unit="nm", version=4, thumbnail=True)


@pytest.mark.parametrize("name,encode", [("movie.tif", tiff), ("movie.npy", npy), ("movie.mp4", mp4),
                                         ("movie.dm4", dm4)])
def test_a_movie_is_tracked_with_progress_and_its_results_stored(gateway, stack_store, frames, name, encode):
    ref = upload(gateway, encode(frames), name)
    progress, response = analyze_stream(gateway, ref, pixel_size_nm="1.5", fps="20")
    assert progress and progress[-1].done == len(frames)
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert progress[-1].counts["particles"] > 0 and progress[-1].counts["tracks"] > 0  # the generic payload
    result = json.loads(response.result_json)
    assert result["movie"]["frames"] == len(frames) and result["movie"]["pixel_size_nm"] == 1.5
    assert result["tracks"] > 0 and result["diffusion"]["d_px2_per_frame"] > 0
    names = {a.name for a in response.artifacts}
    assert {"tracks.parquet", "tracks.csv", "pairs.parquet", "frames.csv", "labels.tif", "trajectories.png",
            "msd.png", "size_vs_time.png", "clusters_vs_time.png", "preview.gif"} <= names
    labels = tifffile.imread(io.BytesIO(stack_store.get(response.result.bucket, next(
        a.ref.key for a in response.artifacts if a.name == "labels.tif"))))
    assert labels.shape == frames.shape
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(stack_store.get("results", next(
        a.ref.key for a in response.artifacts if a.name == "tracks.parquet")))).to_pandas()
    assert len(table) == result["detections"] and {"frame", "track", "row", "col", "diameter"} <= set(table)
    # the same request again: the stored result, no recomputation
    _, again = analyze_stream(gateway, ref, pixel_size_nm="1.5", fps="20")
    assert again.cached and again.job_id == response.job_id


def test_a_cancelled_analysis_stores_nothing(gateway, stack_store, frames):
    ref = upload(gateway, npy(np.concatenate([frames] * 8)), "long.npy")
    call = gateway.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(
        request=gateway_pb2.AnalyzeRequest(input=ref, analysis=MOVIE)), timeout=180)
    for event in call:
        if event.WhichOneof("event") == "progress" and event.progress.done > 0:
            call.cancel()
            break
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    prefix = f"{ref.bucket}/{ref.key}/"
    assert not any(k.endswith("result.json") for k in stack_store.list("results", prefix))
    # it still runs to the end when asked again
    _, response = analyze_stream(gateway, ref)
    assert not response.cached


def bad_files(frames):
    yield "broken.tif", b"II*\0garbage" * 10, "input"
    yield "broken.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 200, "input"
    yield "one.tif", tiff(frames[:1]), "frames"
    yield "flat.npy", npy(np.full((6, 64, 64), 7, np.uint16)), "frames"
    yield "movie.gif", b"GIF89a" + b"\0" * 50, "input"


def test_a_dm4_stack_gives_its_pixel_size(gateway, frames):
    ref = upload(gateway, dm4(frames[:8], scale=0.8), "calibrated.dm4")
    _, response = analyze_stream(gateway, ref)
    movie = json.loads(response.result_json)["movie"]
    assert movie["pixel_size_nm"] == pytest.approx(0.8, rel=1e-6) and movie["pixel_size_source"] == "DigitalMicrograph"


def test_bad_movies_are_refused_naming_the_problem_and_the_stack_keeps_serving(gateway, frames):
    for name, data, field in bad_files(frames):
        with pytest.raises(grpc.RpcError) as err:
            analyze_stream(gateway, upload(gateway, data, name))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.value.details())
        assert name in err.value.details() or field == "frames", err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        analyze_stream(gateway, upload(gateway, npy(frames), "m.npy"), pixel_size_nm="50000")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pixel_size_nm" in err.value.details()
    mixed = io.BytesIO()
    with tifffile.TiffWriter(mixed) as w:
        for f in frames[:4]:
            w.write(f)
        w.write(frames[4, :64, :64])
    with pytest.raises(grpc.RpcError) as err:
        analyze_stream(gateway, upload(gateway, mixed.getvalue(), "mixed.tif"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mixed frame sizes" in err.value.details()
    _, response = analyze_stream(gateway, upload(gateway, npy(frames), "fine.npy"))
    assert json.loads(response.result_json)["tracks"] > 0


def test_the_cli_analyses_a_movie_and_writes_the_results(stack, frames, tmp_path, capsys):
    from nanolens_cli.main import main

    path = tmp_path / "movie.npy"
    np.save(path, frames)
    out = tmp_path / "out"
    code = main(["analyze", "lpem", str(path), "--pixel-size-nm", "2", "--fps", "10", "--out", str(out), "--json",
                 "--gateway", stack[1].gateway])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analysis"] == "lpem_movie" and result["diffusion"]["d_um2_per_s"] > 0
    assert (out / "tracks.csv").is_file() and (out / "preview.gif").stat().st_size > 0
