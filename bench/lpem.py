"""LPEM benchmarks: frames per second at 512 x 512 and 1024 x 1024 (segmentation and tracking
separately), in process and through the stack, trackpy on the same movies, and the service path's
peak resident memory for movies of 500 and 2000 frames (is it independent of length?).

Movies: :mod:`nanolens_lpem.synthetic.movies`, seed 1, particle density as in the evaluation.
"""

from __future__ import annotations

import io
import time

import grpc
import numpy as np

from bench.memory import ResidentPeak
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_lpem.science.segmentation import segment_frames
from nanolens_lpem.science.tracking import StreamLinker
from nanolens_lpem.service import MODEL, SHIPPED_BUNDLES, TASKS, MovieState, Settings, analyse
from nanolens_lpem.synthetic.movies import MovieParams, frames, generate
from nanolens_runtime.inference import select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.storage import ObjectStore


def params(side: int, n_frames: int) -> MovieParams:
    return MovieParams(shape=(side, side), n_frames=n_frames, n_particles=int(25 * (side / 256) ** 2),
                       radius_range=(4.0, 7.0), contrast=0.2, dose=50.0, margin=12)


def in_process(session, images: np.ndarray) -> dict:
    t0 = time.perf_counter()
    segs = []
    for i in range(0, len(images), 8):
        segs += segment_frames(session, images[i:i + 8])
    t_seg = time.perf_counter() - t0
    state = MovieState(Settings(), StreamLinker(10.0, 3))
    t0 = time.perf_counter()
    for i in range(0, len(segs), 8):
        state.add(segs[i:i + 8], images[i:i + 8])
    state.linker.close()
    result = analyse(state)
    t_track = time.perf_counter() - t0
    n = len(images)
    return {"segmentation_fps": round(n / t_seg, 2), "tracking_fps": round(n / t_track, 2),
            "total_fps": round(n / (t_seg + t_track), 2), "detections": state.detections,
            "tracks": int(len(result.track_summary["track"]))}


def trackpy_fps(images: np.ndarray) -> dict:
    import trackpy as tp

    tp.quiet()
    t0 = time.perf_counter()
    feats = tp.batch(list(images), 11, invert=True, minmass=0, processes=1)
    t_locate = time.perf_counter() - t0
    t0 = time.perf_counter()
    tp.link(feats, 10.0, memory=3)
    t_link = time.perf_counter() - t0
    n = len(images)
    return {"locate_fps": round(n / t_locate, 2), "link_fps": round(n / t_link, 2),
            "total_fps": round(n / (t_locate + t_link), 2)}


def service_memory(session, n_frames: int, side: int = 128) -> dict:
    """Peak resident memory of the service path (segment, link, dynamics) over a movie streamed
    frame chunk by chunk from the generator (the movie itself is never in memory)."""
    state = MovieState(Settings(), StreamLinker(10.0, 3))
    gen = frames(params(side, n_frames), seed=2)
    with ResidentPeak() as peak:
        chunk = []
        for f in gen:
            chunk.append(f.image)
            if len(chunk) == 16:
                state.add(segment_frames(session, np.stack(chunk)), np.stack(chunk))
                chunk = []
        if chunk:
            state.add(segment_frames(session, np.stack(chunk)), np.stack(chunk))
        state.linker.close()
        analyse(state)
    return {"frames": n_frames, "side": side, "detections": state.detections,
            "peak_added_mib": None if peak.added_mib is None else round(peak.added_mib, 1)}


def through_stack(endpoints, images: np.ndarray, key: str) -> float:
    store = ObjectStore.from_settings(endpoints.storage_settings())
    buf = io.BytesIO()
    np.save(buf, images.astype(np.uint16))
    store.put("raw", key, buf.getvalue())
    with grpc.insecure_channel(endpoints.gateway) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        t0 = time.perf_counter()
        for _ in gateway.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(request=gateway_pb2.AnalyzeRequest(
                input=common_pb2.ObjectRef(bucket="raw", key=key), analysis=gateway_pb2.ANALYSIS_KIND_LPEM_MOVIE,
                force=True)), timeout=1800):
            pass
        return len(images) / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict:
    registry = ModelRegistry(TASKS, MODEL, [SHIPPED_BUNDLES], select_providers("auto"))
    registry.load_all()
    model = registry.get(MODEL)
    session = model.session
    results: dict = {"provider": model.provider, "sizes": {}}
    sizes = {512: 8 if quick else 40, 1024: 4 if quick else 16}
    movies = {}
    for side, n in sizes.items():
        images, _, _ = generate(params(side, n), seed=1)
        movies[side] = images
        results["sizes"][side] = {"frames": n, "nanolens": in_process(session, images), "trackpy": trackpy_fps(images)}
    with Stack(extra_env={"NANOLENS_LOG_LEVEL": "WARNING"}) as endpoints:
        for side, images in movies.items():
            results["sizes"][side]["nanolens"]["through_stack_fps"] = round(
                through_stack(endpoints, images, f"bench/lpem{side}.npy"), 2)
    lengths = (100, 400) if quick else (500, 2000)
    results["memory"] = [memory_in_fresh_process(n) for n in lengths]
    return results


def memory_in_fresh_process(n_frames: int) -> dict:
    """:func:`service_memory` in a new interpreter, with its whole-process resident peak (VmHWM):
    the number a container limit sees, not disturbed by what this process ran before."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "bench.lpem", "--memory", str(n_frames)], capture_output=True,
                         text=True, timeout=1800, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _memory_main(n_frames: int) -> None:
    import json
    from pathlib import Path

    registry = ModelRegistry(TASKS, MODEL, [SHIPPED_BUNDLES], select_providers("auto"))
    registry.load_all()
    out = service_memory(registry.get(MODEL).session, n_frames)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["process_peak_mib"] = round(int(line.split()[1]) / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    import sys

    _memory_main(int(sys.argv[sys.argv.index("--memory") + 1]))


def report(results: dict) -> str:
    lines = [f"LPEM ({results['provider']})",
             "side  frames  NL seg fps  NL track fps  NL stack fps  trackpy locate fps  trackpy link fps"]
    for side, r in results["sizes"].items():
        nl, tp = r["nanolens"], r["trackpy"]
        lines.append(f"{side:>4}  {r['frames']:>6}  {nl['segmentation_fps']:>10}  {nl['tracking_fps']:>12}  "
                     f"{nl.get('through_stack_fps', '-'):>12}  {tp['locate_fps']:>18}  {tp['link_fps']:>16}")
    for m in results["memory"]:
        lines.append(f"service path, {m['frames']} frames of {m['side']} px ({m['detections']} detections): process "
                     f"peak {m.get('process_peak_mib')} MiB resident (+{m['peak_added_mib']} MiB during the movie)")
    return "\n".join(lines)
