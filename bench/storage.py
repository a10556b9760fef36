"""Object storage: the stack's embedded SeaweedFS against moto's in-memory S3 server, in one run.

Through ``ObjectStore`` (the minio client, as the gateway and services use it): PUT and GET of a
small object (4 KiB, a single spectrum's size) and of a large one (64 MiB; PUT as a multipart
stream, as gateway uploads are), medians of repeated calls; then a job's per-item throughput: the
same single spectra analysed as one job by a spectra-only stack on each store.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from nanolens_cli.stack import EmbeddedStore, ExternalStore, Stack, free_port
from nanolens_client import Client
from nanolens_runtime.settings import StorageSettings
from nanolens_runtime.storage import ObjectStore

SMALL = 4 << 10


@contextlib.contextmanager
def seaweedfs():
    with tempfile.TemporaryDirectory() as folder, \
            EmbeddedStore(Path(folder), "127.0.0.1", free_port()).serving() as server:
        yield ExternalStore("127.0.0.1", server.port, server.access_key, server.secret_key)


@contextlib.contextmanager
def moto():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield ExternalStore("127.0.0.1", port, "bench", "bench-secret")  # moto takes any key
    finally:
        server.stop()


STORES = {"seaweedfs": seaweedfs, "moto": moto}


def _median_ms(fn, n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def transfers(store: ObjectStore, quick: bool) -> dict:
    store.ensure_bucket("bench")
    small = os.urandom(SMALL)
    large = os.urandom((8 if quick else 64) << 20)
    n_small, n_large = (30, 2) if quick else (200, 5)
    return {
        "small_bytes": SMALL, "small_n": n_small, "large_bytes": len(large), "large_n": n_large,
        "small_put_ms": _median_ms(lambda i: store.put("bench", f"small/{i}", small), n_small),
        "small_get_ms": _median_ms(lambda i: store.get("bench", f"small/{i}"), n_small),
        "large_put_ms": _median_ms(lambda i: store.put_stream("bench", f"large/{i}", io.BytesIO(large),
                                                              "application/octet-stream"), n_large),
        "large_get_ms": _median_ms(lambda i: store.get("bench", f"large/{i}"), n_large),
    }


def job_throughput(external: ExternalStore, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, Stack(domains=("spectra",), store=external,
                                                     extra_env={"NANOLENS_JOB_CONCURRENCY": "1"}) as endpoints:
        client = Client(endpoints.gateway)
        for i in range(n):
            path = Path(tmp) / f"{i}.txt"
            path.write_text("".join(f"{100 + 3 * j} {1000 + (j % 11) * 7 + i}\n" for j in range(960)))
            client.upload(path, key=f"bench/storage/{i}.txt", timeout=60)
        start = time.perf_counter()
        last = list(client.watch(client.submit("bench/storage/", "spectra", timeout=120), timeout=3600))[-1]
        seconds = time.perf_counter() - start
        client.close()
    return {"items": n, "done": last.done, "job_s": round(seconds, 2), "items_per_s": round(n / seconds, 2)}


def run(quick: bool = False) -> dict:
    results = {}
    for name, serve in STORES.items():
        with serve() as external:
            store = ObjectStore.from_settings(StorageSettings(
                s3_endpoint=external.endpoint, s3_access_key=external.access_key, s3_secret_key=external.secret_key))
            results[name] = transfers(store, quick)
            results[name]["job"] = job_throughput(external, 20 if quick else 200)
    return {"stores": results}


def report(r: dict) -> str:
    lines = ["storage: through ObjectStore (minio client); medians", f"  {'':<10} {'4 KiB PUT':>10} {'4 KiB GET':>10} "
             f"{'large PUT':>10} {'large GET':>10} {'job items/s':>12}"]
    for name, s in r["stores"].items():
        lines.append(f"  {name:<10} {s['small_put_ms']:>8.1f}ms {s['small_get_ms']:>8.1f}ms "
                     f"{s['large_put_ms'] / 1000:>9.2f}s {s['large_get_ms'] / 1000:>9.2f}s "
                     f"{s['job']['items_per_s']:>12.2f}")
    large = next(iter(r["stores"].values()))["large_bytes"] >> 20
    lines.append(f"  large: {large} MiB; job: {next(iter(r['stores'].values()))['job']['items']} single spectra, "
                 "one item at a time")
    return "\n".join(lines)
