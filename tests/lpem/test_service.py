"""The LPEM service over gRPC on a free port: a movie streamed in chunks, progress, tables, and
bad requests of every kind (each INVALID_ARGUMENT naming its field; the service keeps serving)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nanolens.lpem.v1 import lpem_pb2, lpem_pb2_grpc
from nanolens_gateway.adapters.lpem import stream_movie
from nanolens_lpem.science import quality
from nanolens_lpem.service import MODEL, SHIPPED_BUNDLES, TASKS, LpemPipeline, servicer
from nanolens_lpem.synthetic.movies import MovieParams, generate
from nanolens_runtime import arrays
from nanolens_runtime.inference import InferencePool, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import create_server

D_TRUE = 1.0


@pytest.fixture(scope="module")
def movie():
    params = MovieParams(shape=(128, 128), n_frames=40, n_particles=14, diffusion=D_TRUE, contrast=0.35,
                         radius_range=(4, 7))
    images, labels, truth = generate(params, seed=7)
    return images.astype(np.uint16), labels, truth


@contextlib.asynccontextmanager
async def serving():
    registry = ModelRegistry(TASKS, MODEL, [SHIPPED_BUNDLES], select_providers("cpu"))
    registry.load_all()
    app, port = await create_server([servicer(LpemPipeline(registry, InferencePool(2)))])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield lpem_pb2_grpc.LpemServiceStub(channel)
    await app.server.stop(0)


@pytest.fixture
async def stub():
    async with serving() as s:
        yield s


@dataclass
class Movie:
    """A request: the header, then chunks of frames (each an NDArray message or an array)."""

    header: lpem_pb2.MovieHeader
    chunks: list


def messages(frames, chunk: int = 8, **header) -> Movie:
    return Movie(lpem_pb2.MovieHeader(**header), [frames[i:i + chunk] for i in range(0, len(frames), chunk)])


async def collect(stub, movie: Movie, stop_after: int = 0):
    """Run the call by the protocol's rules (nanolens_gateway.adapters.lpem.stream_movie) and gather it."""
    out = {"progress": [], "labels": [], "tables": {}, "summary": None}

    async def chunks():
        for c in movie.chunks:
            yield c

    async def on_response(r):
        part = r.WhichOneof("part")
        if part == "progress":
            out["progress"].append(r.progress)
            if stop_after and len(out["progress"]) > stop_after:
                raise asyncio.CancelledError  # the caller walks away
        elif part == "labels":
            out["labels"].append(arrays.from_proto(r.labels.labels, "labels"))
        elif part == "table":
            cols = out["tables"].setdefault(r.table.table, {})
            for c in r.table.columns:
                cols.setdefault(c.name, []).append(arrays.from_proto(c.values, c.name, finite=False))
        else:
            out["summary"] = r.summary

    await stream_movie(stub, movie.header, chunks(), on_response, 120)
    out["tables"] = {k: {c: np.concatenate(v) for c, v in t.items()} for k, t in out["tables"].items()}
    return out


def field_of(exc: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(exc)
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            return bad.field_violations[0].field
    return ""


class Raw(np.ndarray):
    """Marks a chunk sent as a prepared NDArray message (to send broken bytes)."""


def bad_requests(frames):
    yield "one frame", messages(frames[:1]), "frames"
    yield "absurd pixel size", messages(frames, pixel_size_nm=5e4), "header.pixel_size_nm"
    yield "negative fps", messages(frames, fps=-1), "header.fps"
    yield "memory", messages(frames, memory_frames=500), "header.memory_frames"
    yield "no particles", messages(np.random.default_rng(0).poisson(50, (8, 128, 128)).astype(np.uint16)), "frames"
    yield "mixed sizes", Movie(lpem_pb2.MovieHeader(), [frames[:4], frames[4:8, :96, :96], frames[8:12]]), \
        "frames.shape"
    yield "blank", Movie(lpem_pb2.MovieHeader(), [np.zeros((4, 64, 64), np.uint8)]), "frames"
    yield "tiny", Movie(lpem_pb2.MovieHeader(), [frames[:4, :8, :8]]), "frames.shape"
    yield "int64", Movie(lpem_pb2.MovieHeader(), [frames[:4].astype(np.int64)]), "frames.dtype"


async def test_bad_input_is_refused_naming_the_field_and_the_service_keeps_serving(stub, movie):
    frames = movie[0]
    for what, requests, field in bad_requests(frames):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(stub, requests)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert field_of(err.value) == field, (what, err.value.details())
    out = await collect(stub, messages(frames[:10]))
    assert out["summary"].frames == 10


async def test_a_cancelled_call_stops_and_the_service_keeps_serving(stub, movie):
    frames = movie[0]
    with pytest.raises(asyncio.CancelledError):
        await collect(stub, messages(np.concatenate([frames] * 3), chunk=2), stop_after=3)
    out = await collect(stub, messages(frames[:6]))
    assert out["summary"].frames == 6


async def test_a_movie_of_particles_is_trusted_and_noise_or_unrelated_frames_are_not(stub, movie):
    """Particles persist and stand out; detections in noise do neither, and in frames taken from
    unrelated movies they do not persist (docs/lpem-evaluation.md, "Verdict")."""
    frames, _, _ = movie
    good = (await collect(stub, messages(frames[:24])))["summary"].quality
    assert good.trustworthy and good.linked_fraction > 0.9 and good.contrast_to_noise > 0.8, list(good.warnings)
    low_linked, low_contrast = quality.MIN_LINKED_FRACTION, quality.MIN_CONTRAST_TO_NOISE
    noise = (np.random.default_rng(1).random((24, 128, 128)) * 60000).astype(np.uint16)
    flagged = (await collect(stub, messages(noise)))["summary"].quality
    assert not flagged.trustworthy and flagged.linked_fraction < low_linked and flagged.contrast_to_noise < low_contrast
    params = MovieParams(shape=(128, 128), n_frames=1, n_particles=14, contrast=0.35, radius_range=(4, 7))
    unrelated = np.stack([generate(params, seed=100 + k)[0][0] for k in range(24)]).astype(np.uint16)
    shuffled = (await collect(stub, messages(unrelated)))["summary"].quality
    assert not shuffled.trustworthy and shuffled.linked_fraction < low_linked
    assert any("persist" in w for w in shuffled.warnings)


async def test_the_binning_is_chosen_from_the_movie_and_a_requested_one_overrides_it(stub):
    """Particles of radius 16-24 px in a noisy movie: unbinned, the U-Net (trained on radii of
    3-16 px) cuts them up and counts the noise; the binning chosen from the first frame finds
    them one each, and says which binning it chose and on what radius."""
    params = MovieParams(shape=(192, 192), n_frames=6, n_particles=10, radius_range=(16, 24), contrast=0.3,
                         dose=8.0, diffusion=0.5, margin=0)
    images, _, truth = generate(params, seed=21)
    frames = images.astype(np.uint16)
    in_view = np.mean([len(t.tracks) for t in truth])
    chosen = (await collect(stub, messages(frames)))["summary"]
    assert chosen.binning.source == "movie" and chosen.binning.factor >= 2
    assert 12 < chosen.binning.typical_radius_px < 30
    assert chosen.detections / chosen.frames == pytest.approx(in_view, rel=0.25)
    unbinned = (await collect(stub, messages(frames, binning=1)))["summary"]
    assert unbinned.binning.source == "request" and unbinned.binning.factor == 1
    assert np.isnan(unbinned.binning.typical_radius_px)
    assert abs(unbinned.detections / unbinned.frames - in_view) > abs(chosen.detections / chosen.frames - in_view)
