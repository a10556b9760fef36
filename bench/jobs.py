"""Durable jobs against direct calls: the same small inputs (single spectra) analysed through
``SubmitJob`` and through one ``Analyze`` call after another, on one stack in one run.

Both paths compute (``force`` for the direct calls; fresh inputs for the job), so the ratio is
the job machinery's cost: the SQLite claims and records, the polling, the lease renewals.

Then a job's throughput: the same number of fresh single spectra as one job on a stack whose
runner takes RATE_CONCURRENCY items of a service at once (goal, issue 36: >= 100 items/s).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from nanolens_cli.stack import Stack
from nanolens_client import Client
from nanolens_runtime.storage import ObjectStore


def _inputs(client: Client, folder: Path, prefix: str, n: int, offset: int) -> list:
    refs = []
    for i in range(n):
        path = folder / f"{prefix.strip('/').replace('/', '-')}-{i}.txt"
        path.write_text("".join(f"{100 + 3 * j} {1000 + (j % 11) * 7 + offset + i}\n" for j in range(960)))
        refs.append(client.upload(path, key=f"{prefix}{i}.txt", timeout=60).object)
    return refs


RATE_CONCURRENCY = 16


def _spectrum_text(i: int, offset: int) -> bytes:
    return "".join(f"{100 + 3 * j} {1000 + (j % 11) * 7 + offset + i}\n" for j in range(960)).encode()


def job_rate(n: int, concurrency: int) -> dict:
    """Items per second of one job of ``n`` single spectra (stored straight into the bucket)."""
    with Stack(domains=("spectra",), extra_env={"NANOLENS_JOB_CONCURRENCY": str(concurrency),
                                                "NANOLENS_LOG_LEVEL": "WARNING"}) as endpoints:
        store = ObjectStore.from_settings(endpoints.storage_settings())
        for i in range(n):
            store.put("raw", f"bench/rate/{i}.txt", _spectrum_text(i, 20_000), "text/plain")
        client = Client(endpoints.gateway)
        start = time.perf_counter()
        job = client.submit("bench/rate/", "spectra", timeout=120)
        last = list(client.watch(job, timeout=3600))[-1]
        wall = time.perf_counter() - start
        client.close()
    return {"items": n, "concurrency": concurrency, "wall_s": wall, "done": last.done, "failed": last.failed,
            "items_per_s": n / wall}


def run(quick: bool = False) -> dict:
    n = 40 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp, Stack(domains=("spectra",),
                                                     extra_env={"NANOLENS_JOB_CONCURRENCY": "1"}) as endpoints:
        client = Client(endpoints.gateway)
        folder = Path(tmp)
        direct_refs = _inputs(client, folder, "bench/direct/", n, 0)
        _inputs(client, folder, "bench/job/", n, 10_000)
        latencies = []
        start = time.perf_counter()
        for ref in direct_refs:  # one caller, one call at a time: what the job runner does per service
            t = time.perf_counter()
            client.analyse_object(ref, "spectra", force=True, timeout=120)
            latencies.append(time.perf_counter() - t)
        direct_s = time.perf_counter() - start
        start = time.perf_counter()
        job = client.submit("bench/job/", "spectra", timeout=120)
        last = list(client.watch(job, timeout=3600))[-1]  # the job as it ended
        job_s = time.perf_counter() - start
        client.close()
    return {"items": n, "job_concurrency_per_service": 1, "store": "sqlite",
            "direct_s": direct_s, "job_s": job_s, "job_done": last.done, "job_failed": last.failed,
            "direct_median_item_s": statistics.median(latencies),
            "job_per_item_s": job_s / n, "overhead_per_item_ms": 1000 * (job_s - direct_s) / n,
            "job_over_direct": job_s / direct_s, "job_items_per_s": n / job_s,
            "rate": job_rate(n, RATE_CONCURRENCY)}


def report(r: dict) -> str:
    return "\n".join([
        f"jobs: {r['items']} single spectra, one at a time per service ({r['store']} job store)",
        f"  direct Analyze calls  {r['direct_s']:.2f} s  (median {1000 * r['direct_median_item_s']:.1f} ms per call)",
        f"  one job               {r['job_s']:.2f} s  ({r['job_done']} done, {r['job_failed']} failed)",
        f"  job / direct          {r['job_over_direct']:.3f}  ({r['overhead_per_item_ms']:+.1f} ms per item; "
        f"goal <= 1.10); the job: {r['job_items_per_s']:.1f} items/s",
        f"  one job, {r['rate']['concurrency']} items at once: {r['rate']['wall_s']:.2f} s, "
        f"{r['rate']['items_per_s']:.1f} items/s ({r['rate']['done']} done, {r['rate']['failed']} failed; "
        "goal >= 100 items/s)",
    ])
