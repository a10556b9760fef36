"""TEM benchmarks: seconds per 2048 x 2048 image for each method, in process and through the stack,
peak memory (resident, native buffers included, and traced numpy + Python), and images per
second for a batch of 100 through the gateway.

The 2048 x 2048 image is stitched from 16 seeded 512 x 512 synthetic images (generating one
2048 x 2048 agglomerate scene directly takes half a minute); tiles are separated by background.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
import tracemalloc

import grpc
import numpy as np
import tifffile

from bench.memory import ResidentPeak
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime.inference import InferencePool, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.storage import ObjectStore
from nanolens_tem.service import CNN_MODEL, SHIPPED_BUNDLES, TASKS, TemPipeline
from nanolens_tem.synthetic.agglomerates import SynthParams, generate

TILE, TILES = 512, 4
REPEATS = 3
BATCH = 100


def tiles(n: int) -> list[np.ndarray]:
    params = SynthParams(shape=(TILE, TILE))
    return [generate(seed=1000 + i, params=params).image for i in range(n)]


def stitch(parts: list[np.ndarray]) -> np.ndarray:
    rows = [np.hstack(parts[r * TILES:(r + 1) * TILES]) for r in range(TILES)]
    return np.vstack(rows)


def tiff_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, image)
    return out.getvalue()


def in_process(pipeline: TemPipeline, image: np.ndarray, method: str) -> dict:
    """Median seconds; peak memory in MiB: resident (the process's peak, and that peak above what
    was resident before the call: the first call of a method includes the growth of onnxruntime's
    arena) and traced (numpy + Python); particles found.

    The timed calls run without tracemalloc, which slows Python-heavy methods (Hough by 20-30 %
    here); one more call, untimed, traces. Tracing left the resident peaks unchanged."""
    times, resident, added = [], 0.0, 0.0
    for _ in range(REPEATS):
        with ResidentPeak() as rss:
            start = time.perf_counter()
            sizing = pipeline.segment(image, method, bright=False)
            times.append(time.perf_counter() - start)
        if rss.peak_mib is not None:
            resident, added = max(resident, rss.peak_mib), max(added, rss.added_mib)
    tracemalloc.start()
    pipeline.segment(image, method, bright=False)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"in_process_s": round(statistics.median(times), 3), "peak_traced_mib": round(traced / 2**20, 1),
            "peak_resident_mib": round(resident, 1), "peak_resident_added_mib": round(added, 1),
            "particles": len(sizing.diameters_px)}


def through_stack(gateway, key: str, method: str) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        gateway.Analyze(gateway_pb2.AnalyzeRequest(
            input=common_pb2.ObjectRef(bucket="raw", key=key), analysis=gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES,
            options={"method": method}, force=True), timeout=900)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def batch_through_stack(address: str, keys: list[str], method: str, concurrency: int = 4) -> float:
    """Images per second for len(keys) analyses, ``concurrency`` in flight at a time."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        queue = iter(keys)

        async def worker():
            for key in queue:
                await stub.Analyze(gateway_pb2.AnalyzeRequest(
                    input=common_pb2.ObjectRef(bucket="raw", key=key),
                    analysis=gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, options={"method": method}, force=True),
                    timeout=900)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(keys) / (time.perf_counter() - start)


def run(quick: bool = False) -> dict:
    parts = tiles(TILES * TILES)
    image = stitch(parts) if not quick else parts[0]
    registry = ModelRegistry(TASKS, CNN_MODEL, [SHIPPED_BUNDLES], select_providers("auto"))
    registry.load_all()
    pipeline = TemPipeline(registry, InferencePool())
    methods = ["watershed", "hough", "ann"] + (["cnn"] if registry.loaded(CNN_MODEL) else [])
    default = pipeline.default_method()
    results: dict = {"image": list(image.shape), "repeats": REPEATS, "default_method": default, "methods": {}}
    for method in methods:
        results["methods"][method] = in_process(pipeline, image, method)
    with Stack(extra_env={"NANOLENS_LOG_LEVEL": "WARNING"}) as endpoints:
        store = ObjectStore.from_settings(endpoints.storage_settings())
        store.put("raw", "bench/tem.tif", tiff_bytes(image))
        for i, part in enumerate(parts):
            store.put("raw", f"bench/tile{i}.tif", tiff_bytes(part))
        with grpc.insecure_channel(endpoints.gateway) as channel:
            gateway = gateway_pb2_grpc.GatewayStub(channel)
            for method in methods:
                seconds = through_stack(gateway, "bench/tem.tif", method)
                entry = results["methods"][method]
                entry["through_stack_s"] = round(seconds, 3)
                entry["platform_overhead"] = round(seconds / entry["in_process_s"] - 1, 4)
        n = 20 if quick else BATCH
        keys = [f"bench/tile{i % len(parts)}.tif" for i in range(n)]
        per_s = asyncio.run(batch_through_stack(endpoints.gateway, keys, default))
        results["batch"] = {"images": n, "shape": [TILE, TILE], "method": default, "images_per_s": round(per_s, 2)}
    watershed = results["methods"]["watershed"]["in_process_s"]
    results["default_vs_watershed"] = round(results["methods"][default]["in_process_s"] / watershed, 3)
    return results


def report(results: dict) -> str:
    h, w = results["image"]
    lines = [f"TEM, one {w} x {h} image, median of {results['repeats']}:"]
    for method, r in results["methods"].items():
        lines.append(f"  {method:<10} in process {r['in_process_s']:7.2f} s"
                     f"  through stack {r['through_stack_s']:7.2f} s"
                     f"  ({100 * r['platform_overhead']:+5.1f} %)  peak resident {r['peak_resident_mib']:7.1f} MiB"
                     f" (+{r['peak_resident_added_mib']:.1f} by the call), traced {r['peak_traced_mib']:.1f} MiB"
                     f"  {r['particles']} particles")
    b = results["batch"]
    lines.append(f"  batch of {b['images']} {b['shape'][0]} x {b['shape'][1]} images through the stack "
                 f"({b['method']}): {b['images_per_s']} images/s")
    lines.append(f"  default method ({results['default_method']}) / watershed time: "
                 f"{results['default_vs_watershed']}x (target <= 3x)")
    return "\n".join(lines)
