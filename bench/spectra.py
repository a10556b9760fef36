"""Spectra benchmarks: platform overhead on a 65,536-spectrum map, latency, dynamic batching.

Every comparison is taken in one run on one machine, and reported as medians and ratios:

- map: seconds for a 256 x 256 x 1024 map (a) in process (decode, preprocess, ONNX, the same
  block size), (b) through gateway and object storage, streamed (one GET by the gateway, a gRPC
  stream of blocks to the service, artefacts written back) and (c) by reference (the service reads
  the map itself with ranged GETs by a presigned URL: NANOLENS_BY_REFERENCE_MB), each also in
  CPU-seconds of every process together. Overhead = b / a - 1 and c / a - 1; target <= 15 %. The
  same at 32², 64² and 128² pixels says where by reference starts to pay (the crossover).
- single spectra: latency p50/p99 with 1 and 64 concurrent callers straight to the service,
  and throughput under 64 callers with dynamic batching (max 64 items, 5 ms) and without
  (batch size 1, a second service process). Target: batching >= 5x.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime import arrays, metrics
from nanolens_runtime.bundles import ModelBundle
from nanolens_runtime.inference import InferencePool, OnnxModel
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.settings import InferenceSettings
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess
from nanolens_spectra.service import DEFAULT_MODEL, SHIPPED_BUNDLES, TASK, SpectraPipeline
from nanolens_spectra.synthetic.swcnt import generate_map, generate_spectra

MAP_SIDE = 256
BLOCK_MB = 8
REPEATS = 3


def in_process_map(data: bytes, model: OnnxModel, params: PreprocessParams) -> float:
    """Decode + preprocess + ONNX over the map in the gateway's block size; returns seconds."""
    start = time.perf_counter()
    cube = np.load(io.BytesIO(data))
    flat = cube.reshape(-1, cube.shape[2])
    rows = (BLOCK_MB << 20) // (flat.shape[1] * 4)
    axis = params.model_axis()
    out = [model.run({"spectra": preprocess(flat[i:i + rows], axis, params)})[0] for i in range(0, len(flat), rows)]
    class_map = np.concatenate(out).argmax(axis=1)
    assert class_map.size == flat.shape[0]
    return time.perf_counter() - start


def through_platform(gateway: gateway_pb2_grpc.GatewayStub, key: str) -> float:
    start = time.perf_counter()
    response = gateway.Analyze(gateway_pb2.AnalyzeRequest(
        input=common_pb2.ObjectRef(bucket="raw", key=key), analysis=gateway_pb2.ANALYSIS_KIND_SPECTRAL_MAP,
        force=True), timeout=900)
    assert response.artifacts
    return time.perf_counter() - start


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def timed(pids: list[int], work) -> tuple[float, float]:
    """(wall seconds, CPU-seconds of ``pids`` and this process) of ``work()``."""
    cpu, own, start = cpu_seconds(pids), time.process_time(), time.perf_counter()
    work()
    return time.perf_counter() - start, cpu_seconds(pids) - cpu + time.process_time() - own


def compare_map(side: int, store: ObjectStore, streamed, by_reference, pids: list[int], model: OnnxModel,
                params: PreprocessParams, repeats: int) -> dict:
    """One map size: in process, streamed and by reference, interleaved so drift in load hits all three;
    medians of wall and CPU seconds."""
    cube, _ = generate_map(side, side, seed=5)
    buffer = io.BytesIO()
    np.save(buffer, cube)
    data = buffer.getvalue()
    key = f"bench/map-{side}.npy"
    store.put("raw", key, data)
    in_process_map(data, model, params)  # warm all three paths
    through_platform(streamed, key)
    through_platform(by_reference, key)
    runs: dict[str, list[tuple[float, float]]] = {"in_process": [], "streamed": [], "by_reference": []}
    for _ in range(repeats):
        runs["in_process"].append(timed([], lambda: in_process_map(data, model, params)))
        runs["streamed"].append(timed(pids, lambda: through_platform(streamed, key)))
        runs["by_reference"].append(timed(pids, lambda: through_platform(by_reference, key)))
    out = {"shape": list(cube.shape), "n_spectra": side * side, "mib": round(len(data) / 2**20, 1),
           "repeats": repeats}
    for path, values in runs.items():
        out[f"{path}_s"] = round(statistics.median(v[0] for v in values), 3)
        out[f"{path}_cpu_s"] = round(statistics.median(v[1] for v in values), 3)
    for path in ("streamed", "by_reference"):
        out[f"{path}_overhead"] = round(out[f"{path}_s"] / out["in_process_s"] - 1, 4)
        out[f"{path}_cpu_overhead"] = round(out[f"{path}_cpu_s"] / out["in_process_cpu_s"] - 1, 4)
    return out


async def hammer(address: str, spectra: np.ndarray, callers: int, requests: int) -> dict:
    """``requests`` single-spectrum calls from ``callers`` concurrent clients; latency and throughput."""
    latencies: list[float] = []
    messages = [spectra_pb2.ClassifySpectraRequest(spectra=arrays.to_proto(s)) for s in spectra]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = spectra_pb2_grpc.SpectraServiceStub(channel)
        await stub.ClassifySpectra(messages[0], timeout=30)  # connect and warm
        counter = iter(range(requests))

        async def caller():
            for i in counter:
                t = time.perf_counter()
                await stub.ClassifySpectra(messages[i % len(messages)], timeout=60)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"callers": callers, "requests": requests, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "spectra_per_s": round(requests / wall, 1)}


async def engine_throughput(max_batch_size: int, spectra: np.ndarray, callers: int, requests: int) -> dict:
    """The batching engine without transport: ``callers`` coroutines classify single spectra in-process
    (validation, batcher, thread pool, preprocessing, onnxruntime: all of the service but gRPC)."""
    registry = ModelRegistry(TASK, DEFAULT_MODEL, [SHIPPED_BUNDLES], ["CPUExecutionProvider"])
    registry.load_all()
    pipeline = SpectraPipeline(registry, InferencePool(), InferenceSettings(max_batch_size=max_batch_size))
    model = registry.get()
    counter = iter(range(requests))

    async def caller():
        for i in counter:
            x, axis = pipeline.validate(model, spectra[i % len(spectra)], None)
            await pipeline.classify(model, x, axis, metrics.StageTimer())

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall = time.perf_counter() - start
    pipeline.pool.shutdown()
    return {"max_batch_size": max_batch_size, "callers": callers, "requests": requests,
            "spectra_per_s": round(requests / wall, 1)}


def run(quick: bool = False) -> dict:
    side = 64 if quick else MAP_SIDE
    bundle = ModelBundle.load(next(p for p in (SHIPPED_BUNDLES / DEFAULT_MODEL).iterdir() if p.is_dir()))
    model = OnnxModel(bundle, ["CPUExecutionProvider"])
    params = PreprocessParams.from_dict(bundle.manifest["preprocessing"])
    singles = generate_spectra(n_per_class=50, seed=6).spectra

    results: dict = {"map": {"n_spectra": side * side, "repeats": 1 if quick else REPEATS}}
    env = {"NANOLENS_BLOCK_MB": str(BLOCK_MB), "NANOLENS_LOG_LEVEL": "WARNING"}
    with (stack := Stack(extra_env={**env, "NANOLENS_BY_REFERENCE_MB": "0"})) as endpoints:  # streams maps
        store = ObjectStore.from_settings(endpoints.storage_settings())
        # a second gateway on the same services and storage, which hands every .npy map over by reference
        second = Stack(domains=("spectra",), extra_env={
            **env, "NANOLENS_BY_REFERENCE_MB": "1", "NANOLENS_SPECTRA_ADDR": endpoints.spectra,
            "NANOLENS_S3_ENDPOINT": endpoints.s3, "NANOLENS_S3_ACCESS_KEY": endpoints.s3_access_key,
            "NANOLENS_S3_SECRET_KEY": endpoints.s3_secret_key})
        proc = second.spawn_service("gateway")
        try:
            if not proc.serving.wait(90):
                raise RuntimeError("".join(proc.lines))
            running = [p.popen.pid for p in stack.processes] + [proc.popen.pid]
            with grpc.insecure_channel(endpoints.gateway) as a, grpc.insecure_channel(second.endpoints.gateway) as b:
                streamed, by_reference = gateway_pb2_grpc.GatewayStub(a), gateway_pb2_grpc.GatewayStub(b)
                sides = (16, side) if quick else (32, 64, 128, side)
                sizes = [compare_map(s_, store, streamed, by_reference, running, model, params,
                                     1 if quick else REPEATS) for s_ in sides]
        finally:
            second.stop()
        largest = sizes[-1]
        results["map"].update({
            "shape": largest["shape"], "in_process_s": largest["in_process_s"], "platform_s": largest["streamed_s"],
            "by_reference_s": largest["by_reference_s"],
            "in_process_spectra_per_s": round(side * side / largest["in_process_s"]),
            "platform_spectra_per_s": round(side * side / largest["streamed_s"]),
            "overhead": largest["streamed_overhead"], "by_reference_overhead": largest["by_reference_overhead"],
            "sizes": sizes})

        unbatched = Stack(extra_env={"NANOLENS_MAX_BATCH_SIZE": "1", "NANOLENS_LOG_LEVEL": "WARNING",
                                     "NANOLENS_S3_ENDPOINT": ""})
        proc = unbatched.spawn_service("spectra")
        try:
            if not proc.serving.wait(90):
                raise RuntimeError("".join(proc.lines))
            n = 400 if quick else 4000
            batched_addr, single_addr = endpoints.spectra, unbatched.endpoints.spectra
            latency = {
                "batched_1_caller": asyncio.run(hammer(batched_addr, singles, 1, n // 4)),
                "batched_64_callers": asyncio.run(hammer(batched_addr, singles, 64, n)),
                "unbatched_1_caller": asyncio.run(hammer(single_addr, singles, 1, n // 4)),
                "unbatched_64_callers": asyncio.run(hammer(single_addr, singles, 64, n)),
            }
        finally:
            unbatched.stop()
    latency["batching_speedup_64_callers"] = round(
        latency["batched_64_callers"]["spectra_per_s"] / latency["unbatched_64_callers"]["spectra_per_s"], 2)
    results["single_spectrum"] = latency
    n = 1000 if quick else 8000
    engine = {"batched": asyncio.run(engine_throughput(64, singles, 64, n)),
              "unbatched": asyncio.run(engine_throughput(1, singles, 64, n // 4))}
    engine["batching_speedup"] = round(engine["batched"]["spectra_per_s"] / engine["unbatched"]["spectra_per_s"], 2)
    results["engine_64_callers"] = engine
    return results


def report(results: dict) -> str:
    m = results["map"]
    lines = [
        f"map {m['shape']} ({m['n_spectra']} spectra), median of {m['repeats']}:",
        f"  in process        {m['in_process_s']:8.3f} s  {m['in_process_spectra_per_s']:>9} spectra/s",
        f"  through platform  {m['platform_s']:8.3f} s  {m['platform_spectra_per_s']:>9} spectra/s",
        f"  overhead          {100 * m['overhead']:7.1f} %   (target <= 15 %)",
        f"  by reference      {m['by_reference_s']:8.3f} s  overhead {100 * m['by_reference_overhead']:.1f} %",
        "map sizes, medians (wall s / CPU-s of all processes; overhead against in process):",
    ]
    for z in m["sizes"]:
        lines.append(f"  {z['shape'][0]:>4}^2 ({z['mib']:6.1f} MiB)  in process {z['in_process_s']:.3f} / "
                     f"{z['in_process_cpu_s']:.3f}  streamed {z['streamed_s']:.3f} / {z['streamed_cpu_s']:.3f} "
                     f"({100 * z['streamed_overhead']:+.0f} % / {100 * z['streamed_cpu_overhead']:+.0f} %)  "
                     f"by reference {z['by_reference_s']:.3f} / {z['by_reference_cpu_s']:.3f} "
                     f"({100 * z['by_reference_overhead']:+.0f} % / {100 * z['by_reference_cpu_overhead']:+.0f} %)")
    lines.append("single spectrum, straight to the service:")
    for name, r in results["single_spectrum"].items():
        if isinstance(r, dict):
            lines.append(f"  {name:<22} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                         f"{r['spectra_per_s']:>9} spectra/s  ({r['requests']} requests)")
    lines.append(f"  batching speed-up under 64 callers: {results['single_spectrum']['batching_speedup_64_callers']}x"
                 " (target >= 5x)")
    e = results["engine_64_callers"]
    lines.append("batching engine in process (no gRPC), 64 concurrent callers of single spectra:")
    lines.append(f"  batched {e['batched']['spectra_per_s']:>9} spectra/s, "
                 f"batch size 1 {e['unbatched']['spectra_per_s']:>9} spectra/s: {e['batching_speedup']}x")
    return "\n".join(lines)
