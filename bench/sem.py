"""SEM benchmarks: images per second for lens and embed at 1024 x 1024, in process (the service's
pipeline and its response) and through the stack (fetch, decode, transport, the gateway's pictures
and stored objects), in one run (the overhead ratio: what the platform adds to the model);
the peak resident memory of one 8192 x 8192 image through the service path (lens and anomaly), in a
fresh process.

Images: :func:`nanolens_sem.synthetic.textures.generate`, seeds 0.., 8-bit.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import grpc
import numpy as np

from bench.memory import ResidentPeak
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime.inference import select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.storage import ObjectStore
from nanolens_sem.service import SEM, SemPipeline, SemRequest, SemServicer, layer_names
from nanolens_sem.synthetic.textures import generate


def images(n: int, side: int) -> list[np.ndarray]:
    return [(generate(seed, (side, side)).image * 255).astype(np.uint8) for seed in range(n)]


def pipeline():
    registry = ModelRegistry(SEM.tasks, SEM.default_model, [SEM.bundles], select_providers("auto"))
    registry.load_all()
    model = registry.get(SEM.default_model)
    return SemPipeline(registry, None), model


def in_process(pipe, model, batch: list[np.ndarray], lens: bool) -> float:
    """The service's work in this process: the analysis and its encoded response."""
    layers = layer_names(model) if lens else ()
    t0 = time.perf_counter()
    for image in batch:
        result = pipe.analyse(SemRequest(image, layers, 256, lens, None, False), model)
        SemServicer.encode(result, image.shape, None)
    return len(batch) / (time.perf_counter() - t0)


def through_stack(endpoints, batch: list[np.ndarray], lens: bool) -> float:
    store = ObjectStore.from_settings(endpoints.storage_settings())
    keys = []
    for i, image in enumerate(batch):
        buf = io.BytesIO()
        np.save(buf, image)
        keys.append(f"bench/sem{i}.npy")
        store.put("raw", keys[-1], buf.getvalue())
    options = {"lens": "all", "anomaly": "yes"} if lens else {}
    with grpc.insecure_channel(endpoints.gateway) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        t0 = time.perf_counter()
        for key in keys:
            gateway.Analyze(gateway_pb2.AnalyzeRequest(input=common_pb2.ObjectRef(bucket="raw", key=key),
                                                       analysis=gateway_pb2.ANALYSIS_KIND_SEM_IMAGE,
                                                       options=options, force=True), timeout=600)
        return len(keys) / (time.perf_counter() - t0)


def memory_in_fresh_process(side: int) -> dict:
    run = subprocess.run([sys.executable, "-m", "bench.sem", "--memory", str(side)], capture_output=True, text=True,
                         timeout=1800, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _memory_main(side: int) -> None:
    from pathlib import Path

    pipe, model = pipeline()
    image = (generate(0, (side, side)).image * 255).astype(np.uint8)
    with ResidentPeak() as peak:
        t0 = time.perf_counter()
        pipe.analyse(SemRequest(image, layer_names(model), 256, True, None, False), model)
        seconds = time.perf_counter() - t0
    out = {"side": side, "image_mib": round(image.nbytes / 2**20, 1), "seconds": round(seconds, 2),
           "peak_added_mib": None if peak.added_mib is None else round(peak.added_mib, 1)}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["process_peak_mib"] = round(int(line.split()[1]) / 1024, 1)
    print(json.dumps(out))


def run(quick: bool = False) -> dict:
    pipe, model = pipeline()
    side, n = (256, 3) if quick else (1024, 12)
    batch = images(n, side)
    results: dict = {"provider": model.provider, "side": side, "images": n, "modes": {}}
    for mode, lens in (("embed", False), ("lens+anomaly", True)):
        results["modes"][mode] = {"in_process_per_s": round(in_process(pipe, model, batch, lens), 3)}
    with Stack(extra_env={"NANOLENS_LOG_LEVEL": "WARNING"}) as endpoints:
        for mode, lens in (("embed", False), ("lens+anomaly", True)):
            r = results["modes"][mode]
            r["through_stack_per_s"] = round(through_stack(endpoints, batch, lens), 3)
            r["overhead"] = round(r["in_process_per_s"] / r["through_stack_per_s"] - 1, 3)
    results["memory"] = memory_in_fresh_process(1024 if quick else 8192)
    return results


def report(results: dict) -> str:
    lines = [f"SEM ({results['provider']}), {results['images']} images of {results['side']} x {results['side']} px",
             "mode           in process/s  through stack/s  overhead"]
    for mode, r in results["modes"].items():
        lines.append(f"{mode:<14} {r['in_process_per_s']:>12}  {r['through_stack_per_s']:>15}  {r['overhead']:>+8.1%}")
    m = results["memory"]
    lines.append(f"one {m['side']} x {m['side']} image ({m['image_mib']} MiB) with lens and anomaly: {m['seconds']} s, "
                 f"process peak {m.get('process_peak_mib')} MiB resident (+{m['peak_added_mib']} MiB during it)")
    return "\n".join(lines)


if __name__ == "__main__":
    _memory_main(int(sys.argv[sys.argv.index("--memory") + 1]))
