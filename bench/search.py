"""SEM collection search at 10^4, 10^5 and 10^6 vectors of the embedding's size, exact and through
the HNSW graph, in one run: per-query p50/p99 (one thread, as the gateway answers a query) and
recall@10 of the graph against the exact scan, the graph's build time (every core) and the
memory it holds (vectors, links and levels); then searches through a gateway (its stamp check
and gRPC included; the listing it makes after an addition timed beside) over a collection of
item objects in the stack's SeaweedFS.

Vectors: seeded unit vectors in families (a centre each, spread within it; about 100 per
family), the shape of embeddings of kinds of sample; queries are new vectors of the same families.
In process it is the search the gateway serves (:mod:`nanolens_search`); the gateway's collection
is written as the SEM analysis writes it (docs/sem.md, "Collections and search").
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import grpc
import numpy as np

import nanolens_search
from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_runtime.storage import ObjectStore
from nanolens_search import Vectors, new_index, search

DIM = 352
MODEL = {"name": "bench-model", "version": "1", "sha256": "0" * 64}


def family_vectors(n: int, seed: int, families: int) -> np.ndarray:
    """``n`` unit vectors of ``families`` families (centres fixed by ``families``), float32, made in
    blocks so that 10^6 of them take their own 1.4 GB and no more."""
    centres = np.random.default_rng(families).standard_normal((families, DIM), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        block = centres[rng.integers(0, families, stop - start)]
        block += 0.6 * rng.standard_normal(block.shape, dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def collection(vectors: np.ndarray, graph: bool) -> tuple[Vectors, float]:
    """The vectors as the gateway holds a collection, and the seconds its index took to build."""
    loaded = Vectors(new_index(DIM, graph))
    n = len(vectors)
    keys = [f"k{i}" for i in range(n)]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    loaded.append(keys, keys, [{"bucket": "raw", "key": k, "version_id": ""} for k in keys], vectors)
    seconds = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    return loaded, seconds


def timed(loaded: Vectors, queries: np.ndarray) -> tuple[list[list[int]], dict]:
    rows, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = search(loaded, q, 10)
        times.append(time.perf_counter() - t0)
        rows.append([r for r, _ in hits])
    times.sort()
    return rows, {"p50_ms": round(1e3 * statistics.median(times), 3),
                  "p99_ms": round(1e3 * times[int(0.99 * (len(times) - 1))], 3)}


def held_bytes(index: faiss.IndexHNSWFlat) -> int:
    """What the graph holds in memory: its vectors, its links and each node's offsets and level."""
    h = index.hnsw
    return (faiss.downcast_index(index.storage).codes.size() + 4 * h.neighbors.size() + 8 * h.offsets.size()
            + 4 * h.levels.size())


def one_size(n: int, queries: int, graph_max: int) -> dict:
    vectors = family_vectors(n, 1, max(10, n // 100))
    query = family_vectors(queries, 2, max(10, n // 100))
    scan, _ = collection(vectors, graph=False)
    truth, exact = timed(scan, query)
    del scan
    if n > graph_max:  # a build too long for the machine at hand: the exact scan alone
        return {"n": n, "dim": DIM, "queries": queries, "exact": exact, "graph": None}
    graph, build_s = collection(vectors, graph=True)
    found, approx = timed(graph, query)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
    return {"n": n, "dim": DIM, "queries": queries, "exact": exact,
            "graph": dict(approx, recall_at_10=round(recall, 4), build_s=round(build_s, 1),
                          build_threads=os.cpu_count(), m=nanolens_search.HNSW_M,
                          ef_construction=nanolens_search.EF_CONSTRUCTION, ef_search=nanolens_search.EF_SEARCH,
                          graph_mib=round(held_bytes(graph.index) / 2**20), vectors_mib=round(vectors.nbytes / 2**20))}


def through_gateway(n: int, queries: int) -> dict:
    """Searches through a gateway whose collection of ``n`` items is past its graph threshold
    (``n`` / 2), each a stored item's vector as the query, after the first search (which lists
    the items, builds and stores the graph); beside it, the listing of the items alone, which a
    search makes after an addition."""
    env = {"NANOLENS_LOG_LEVEL": "WARNING", "NANOLENS_SEM_INDEX_ABOVE": str(n // 2)}
    with Stack(extra_env=env, domains=("sem",)) as endpoints:
        store = ObjectStore.from_settings(endpoints.storage_settings())
        bucket = "results"
        vectors = family_vectors(n, 1, max(10, n // 100))

        prefix = "sem/collections/bench/"
        record = {"name": "bench", "model": MODEL, "dim": DIM}
        store.put(bucket, prefix + "collection.json", json.dumps(record).encode())

        def add(i):  # an item as the SEM analysis writes it
            key = f"bench/{i}.png"
            item = {"bucket": "raw", "key": key, "version_id": "", "etag": "",
                    "vector": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode()}
            name = hashlib.sha256(f"raw/{key}".encode()).hexdigest()[:40]
            store.put(bucket, f"{prefix}items/{name}.json", json.dumps(item).encode(), "application/json")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(add, range(n)))
        fill_s = time.perf_counter() - t0
        rng = np.random.default_rng(3)
        with grpc.insecure_channel(endpoints.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)

            def one(i: int) -> float:
                t = time.perf_counter()
                stub.SearchCollection(gateway_pb2.SearchCollectionRequest(
                    collection="bench", query=common_pb2.ObjectRef(bucket="raw", key=f"bench/{i}.png"), k=10),
                    timeout=600)
                return time.perf_counter() - t

            first_s = one(0)
            times = sorted(one(int(i)) for i in rng.integers(0, n, queries))
        listing = []
        for _ in range(min(queries, 20)):
            t = time.perf_counter()
            store.list_etags(bucket, f"{prefix}items/")
            listing.append(time.perf_counter() - t)
    return {"n": n, "queries": queries, "fill_s": round(fill_s, 1), "first_search_s": round(first_s, 2),
            "p50_ms": round(1e3 * statistics.median(times), 2),
            "p99_ms": round(1e3 * times[int(0.99 * (queries - 1))], 2),
            "listing_p50_ms": round(1e3 * statistics.median(listing), 2)}


def run(quick: bool = False) -> dict:
    sizes = (1000, 5000) if quick else tuple(int(s) for s in os.environ.get(
        "NANOLENS_BENCH_SEARCH_SIZES", "10000,100000,1000000").split(","))
    # graphs over this many vectors are not built (a 10^6 build takes tens of minutes on two busy cores)
    graph_max = int(os.environ.get("NANOLENS_BENCH_SEARCH_GRAPH_MAX", max(sizes)))
    queries = 50 if quick else 200
    return {"sizes": [one_size(n, queries, graph_max) for n in sizes],
            "gateway": through_gateway(1000 if quick else 5000, 20 if quick else 50)}


def report(results: dict) -> str:
    lines = ["SEM collection search, top 10 of 352-dim vectors, one thread per query",
             "        n   exact p50/p99 ms   graph p50/p99 ms  recall@10  build s (threads)  graph MiB (vectors)"]
    for s in results["sizes"]:
        e, g = s["exact"], s["graph"]
        if g is None:
            lines.append(f"{s['n']:>9,}   {e['p50_ms']:>7} / {e['p99_ms']:<7}  (graph not built: "
                         "NANOLENS_BENCH_SEARCH_GRAPH_MAX)")
            continue
        lines.append(f"{s['n']:>9,}   {e['p50_ms']:>7} / {e['p99_ms']:<7}  {g['p50_ms']:>7} / {g['p99_ms']:<7}  "
                     f"{g['recall_at_10']:>9}  {g['build_s']:>7} ({g['build_threads']})  "
                     f"{g['graph_mib']} ({g['vectors_mib']})")
    g = results["gateway"]
    lines.append(f"through a gateway, {g['n']:,} stored items (graph): p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms "
                 f"({g['queries']} searches; first search {g['first_search_s']} s builds and stores the graph); "
                 f"listing the items (what a search after an addition adds) p50 {g['listing_p50_ms']} ms")
    return "\n".join(lines)
