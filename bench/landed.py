"""Object landed -> stored result: the time from an object's upload, through its bucket event, to
its stored result, for one spectrum and for 512 x 512 and 2048 x 2048 TEM images (issue 36; goal:
at most the in-process analysis time + 1 s).

The stack's store (SeaweedFS) sends no MinIO webhook, so the benchmark posts what MinIO would post
(the object's key and ETag) to the gateway's events endpoint as soon as the PUT returns. The clock
runs from before the PUT until GetJob (polled every 10 ms) first says the event's job is done: the
upload, the event, the job runner's claim, the analysis with its pictures, the stored result and
the job's record. Every object is new (distinct bytes), so every one is computed. The in-process
figure beside each is the analysis alone in this process (decode, preprocessing and model for the
spectrum; ``TemPipeline.segment`` with the default method for the images), median of the same
number of runs.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from bench.tem import stitch, tiff_bytes, tiles
from nanolens_cli.stack import Stack, free_port
from nanolens_client import Client
from nanolens_runtime.bundles import ModelBundle
from nanolens_runtime.inference import InferencePool, OnnxModel, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.storage import ObjectStore
from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess
from nanolens_spectra.service import DEFAULT_MODEL
from nanolens_spectra.service import SHIPPED_BUNDLES as SPECTRA_BUNDLES
from nanolens_tem.service import CNN_MODEL, TASKS, TemPipeline
from nanolens_tem.service import SHIPPED_BUNDLES as TEM_BUNDLES

TOKEN = "bench-events-token"
RULES = {"rules": [{"bucket": "raw", "prefix": "landed/spectrum/", "suffix": ".txt", "analysis": "spectra"},
                   {"bucket": "raw", "prefix": "landed/tem", "suffix": ".tif", "analysis": "particle_sizes"}]}


def spectrum_text(i: int) -> bytes:
    return "".join(f"{100 + 3 * j} {1000 + (j % 11) * 7 + 3 * i}\n" for j in range(960)).encode()


def images(side: int, n: int) -> list[np.ndarray]:
    """``n`` distinct seeded synthetic micrographs of side x side (2048: 16 tiles stitched, shifted)."""
    if side == 512:
        return tiles(n)
    whole = stitch(tiles(16))
    return [np.roll(whole, 37 * i, axis=1) for i in range(n)]


def post_event(port: int, key: str, etag: str) -> list[str]:
    """What MinIO's webhook posts for a new object; the jobs the gateway made for it."""
    record = {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "raw"}, "object": {
        "key": urllib.parse.quote(key, safe=""), "eTag": etag}}}
    body = json.dumps({"EventName": "s3:ObjectCreated:Put", "Key": f"raw/{key}", "Records": [record]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events/minio", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["jobs"]


def landed(store: ObjectStore, client: Client, port: int, key: str, data: bytes) -> float:
    """Seconds from the start of the PUT to the job's result stored."""
    start = time.perf_counter()
    info = store.put("raw", key, data)
    (job_id,) = post_event(port, key, info.etag)
    while (job := client.get_job(job_id, items=False, timeout=30)).state not in ("done", "failed", "cancelled"):
        time.sleep(0.01)
    if job.state != "done":
        raise RuntimeError(f"{key}: the job ended {job.state}")
    return time.perf_counter() - start


def in_process_spectrum(data: bytes, model: OnnxModel, params: PreprocessParams) -> float:
    start = time.perf_counter()
    table = np.loadtxt(io.BytesIO(data), dtype=np.float32)
    spectrum = np.interp(params.model_axis(), table[:, 0], table[:, 1]).astype(np.float32)[None, :]
    model.run({"spectra": preprocess(spectrum, params.model_axis(), params)})
    return time.perf_counter() - start


def percentiles(values: list[float]) -> dict:
    return {"p50_s": round(statistics.median(values), 4), "p95_s": round(float(np.percentile(values, 95)), 4),
            "n": len(values)}


def run(quick: bool = False) -> dict:
    counts = {"spectrum": 5 if quick else 30, "tem_512": 3 if quick else 10, "tem_2048": 1 if quick else 5}
    spectra = [spectrum_text(i) for i in range(counts["spectrum"] + 1)]
    pictures = {side: images(side, counts[f"tem_{side}"] + 1) for side in ((512,) if quick else (512, 2048))}

    bundle = ModelBundle.load(next(p for p in (SPECTRA_BUNDLES / DEFAULT_MODEL).iterdir() if p.is_dir()))
    model, params = OnnxModel(bundle, ["CPUExecutionProvider"]), PreprocessParams.from_dict(
        bundle.manifest["preprocessing"])
    registry = ModelRegistry(TASKS, CNN_MODEL, [TEM_BUNDLES], select_providers("auto"))
    registry.load_all()
    pipeline = TemPipeline(registry, InferencePool())
    method = pipeline.default_method()
    inside = {"spectrum": [in_process_spectrum(d, model, params) for d in spectra[1:]]}
    for side, batch in pictures.items():
        pipeline.segment(batch[0], method)  # warm
        times = []
        for image in batch[1:]:
            start = time.perf_counter()
            pipeline.segment(image, method)
            times.append(time.perf_counter() - start)
        inside[f"tem_{side}"] = times

    port = free_port()
    results: dict = {"method": method, "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.json"
        rules.write_text(json.dumps(RULES))
        with Stack(domains=("spectra", "tem"), extra_env={
                "NANOLENS_EVENTS_PORT": str(port), "NANOLENS_EVENT_RULES": str(rules), "NANOLENS_EVENTS_TOKEN": TOKEN,
                "NANOLENS_EVENTS_SCAN_SECONDS": "0", "NANOLENS_LOG_LEVEL": "WARNING"}) as endpoints:
            store = ObjectStore.from_settings(endpoints.storage_settings())
            client = Client(endpoints.gateway)
            through = {"spectrum": [landed(store, client, port, f"landed/spectrum/{i}.txt", d)
                                    for i, d in enumerate(spectra)][1:]}  # the first warms the path
            for side, batch in pictures.items():
                through[f"tem_{side}"] = [landed(store, client, port, f"landed/tem{side}/{i}.tif", tiff_bytes(image))
                                          for i, image in enumerate(batch)][1:]
            client.close()
    for kind, times in through.items():
        alone = statistics.median(inside[kind])
        entry = {"landed_to_result": percentiles(times), "in_process_p50_s": round(alone, 4)}
        entry["p50_over_in_process_s"] = round(entry["landed_to_result"]["p50_s"] - alone, 4)
        results["kinds"][kind] = entry
    return results


def report(results: dict) -> str:
    lines = [f"object landed -> stored result (bucket event, job runner; TEM method {results['method']}):"]
    for kind, entry in results["kinds"].items():
        t = entry["landed_to_result"]
        lines.append(f"  {kind:<9} p50 {1000 * t['p50_s']:8.1f} ms, p95 {1000 * t['p95_s']:8.1f} ms (n={t['n']}); "
                     f"in process {1000 * entry['in_process_p50_s']:8.1f} ms; p50 beyond it "
                     f"{1000 * entry['p50_over_in_process_s']:+.0f} ms (goal <= +1000 ms)")
    return "\n".join(lines)
