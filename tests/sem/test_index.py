"""The SEM collections' HNSW graph on a real object store (SeaweedFS): it finds what the exact
search finds, it is stored and loaded by another gateway and brought up to date with added,
replaced and deleted items, a deleted item never comes back, and a read filter still gives k hits
of which none is turned down."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from nanolens.common.v1 import common_pb2
from nanolens_gateway.adapters import sem_collections
from nanolens_gateway.adapters.sem_collections import Collections
from nanolens_search import search

DIM, N, GRAPH_ABOVE = 352, 1200, 500
MODEL = common_pb2.ModelInfo(name="sem-autoencoder", version="1.0.0", sha256="ab" * 32)


def vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors in 40 families (a centre and spread within it), as embeddings of kinds of sample."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((40, DIM), dtype=np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def add(store, bucket: str, name: str, keys: list[str], matrix: np.ndarray) -> None:
    def one(i):
        source = SimpleNamespace(bucket="raw", key=keys[i], version_id="", etag=uuid.uuid4().hex)
        sem_collections.add(store, bucket, name, MODEL, source, matrix[i])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(len(keys))))


def exact(live: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    keys = list(live)
    scores = np.stack([live[key] for key in keys]) @ query
    return [keys[i] for i in np.argsort(-scores, kind="stable")[:k]]


def found(loaded, query: np.ndarray, k: int = 10, may=lambda o: True) -> list[str]:
    return [loaded.vectors.objects[r]["key"] for r, _ in search(loaded.vectors, query, k, -1, may)]


def recall(loaded, live: dict[str, np.ndarray], queries: np.ndarray, may=lambda o: True) -> float:
    readable = {k: v for k, v in live.items() if may({"bucket": "raw", "key": k})}
    return float(np.mean([len(set(found(loaded, q, 10, may)) & set(exact(readable, q, 10))) / 10 for q in queries]))


@pytest.fixture
def collection(store):
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    keys = [f"img/{i:05d}.png" for i in range(N)]
    matrix = vectors(N, 1)
    add(store, bucket, "wafers", keys, matrix)
    return bucket, dict(zip(keys, matrix, strict=True))


def test_the_graph_finds_what_the_exact_search_finds(store, collection):
    bucket, live = collection
    queries = vectors(60, 2)
    graph = Collections(store, bucket, index_above=GRAPH_ABOVE).refresh("wafers")
    scan = Collections(store, bucket, index_above=N + 1).refresh("wafers")
    assert graph.vectors.graph and not scan.vectors.graph and graph.vectors.n_items == scan.vectors.n_items == N
    matrix = np.stack(list(live.values()))
    for q in queries[:10]:  # the reference is exact (equal scores, whatever order float sums give near-ties)
        scores = [s for _, s in search(scan.vectors, q, 10)]
        np.testing.assert_allclose(scores, np.sort(matrix @ q)[::-1][:10], atol=1e-5)
    assert recall(graph, live, queries) >= 0.95


def test_a_stored_graph_is_loaded_elsewhere_and_brought_up_to_date(store, collection):
    bucket, live = collection
    first = Collections(store, bucket, index_above=GRAPH_ABOVE).refresh("wafers")
    assert first.vectors.graph and store.exists(bucket, f"{sem_collections.PREFIX}wafers/{sem_collections.INDEX_KEY}")
    # after the graph was stored: 60 new images, 40 deleted, 20 analysed again (new vectors)
    new_keys = [f"img/new{i}.png" for i in range(60)]
    add(store, bucket, "wafers", new_keys, vectors(60, 3))
    live.update(zip(new_keys, vectors(60, 3), strict=True))
    deleted = [f"img/{i:05d}.png" for i in range(0, 400, 10)]
    for key in deleted:
        store.client.remove_object(bucket, sem_collections.item_key("wafers", "raw", key))
    replaced = [f"img/{i:05d}.png" for i in range(1, 200, 10)]
    old = {key: live[key] for key in replaced}
    add(store, bucket, "wafers", replaced, vectors(20, 4))
    live.update(zip(replaced, vectors(20, 4), strict=True))
    gone = {key: live.pop(key) for key in deleted}

    other = Collections(store, bucket, index_above=GRAPH_ABOVE).refresh("wafers")  # another gateway
    assert other.vectors.graph and other.vectors.n_items == len(live) == N + 60 - 40
    assert len(other.vectors.keys) > other.vectors.n_items  # the stored graph, with tombstones, not one built anew
    for key, vector in gone.items():  # a deleted image is not found even by its own vector
        assert key not in found(other, vector, 50)
    for key in replaced:  # a replaced one holds its new vector, once
        row = other.vectors.rows[sem_collections.item_key("wafers", "raw", key)]
        np.testing.assert_array_equal(other.vectors.vector(row), live[key])
        assert found(other, live[key], 1) == [key] and not np.array_equal(old[key], live[key])
    assert found(other, live[new_keys[0]], 1) == [new_keys[0]]
    assert recall(other, live, vectors(40, 5)) >= 0.95

    # past a quarter of tombstones the rows are compacted into a new graph; deleted stays deleted
    more = [key for key in list(live) if key.startswith("img/0")][:300]
    for key in more:
        store.client.remove_object(bucket, sem_collections.item_key("wafers", "raw", key))
        gone[key] = live.pop(key)
    compacted = Collections(store, bucket, index_above=GRAPH_ABOVE).refresh("wafers")
    assert compacted.vectors.graph and len(compacted.vectors.keys) == compacted.vectors.n_items == len(live)
    assert all(key not in found(compacted, vector, 20) for key, vector in list(gone.items())[::10])
    assert recall(compacted, live, vectors(40, 6)) >= 0.95


def test_a_read_filter_gives_k_hits_none_of_them_turned_down(store, collection):
    bucket, live = collection
    graph = Collections(store, bucket, index_above=GRAPH_ABOVE).refresh("wafers")
    queries = vectors(30, 7)
    for share in (2, 50):  # half of the images readable, and one in fifty (k of 10 needs an exact scan)
        may = lambda o, share=share: int(o["key"][4:9]) % share == 0  # noqa: E731
        for q in queries:
            hits = found(graph, q, 10, may)
            assert len(hits) == 10 and all(may({"key": key}) for key in hits)
        assert recall(graph, live, queries, may) >= 0.95
    nobody = found(graph, queries[0], 10, lambda o: False)
    assert nobody == []



def test_a_search_lists_the_items_only_after_an_addition_or_a_while(store, collection):
    bucket, live = collection
    patient = Collections(store, bucket, index_above=GRAPH_ABOVE, relist_seconds=3600)
    eager = Collections(store, bucket, index_above=GRAPH_ABOVE, relist_seconds=0)
    assert patient.refresh("wafers").vectors.n_items == eager.refresh("wafers").vectors.n_items == N
    store.client.remove_object(bucket, sem_collections.item_key("wafers", "raw", "img/00007.png"))
    # deleted in storage directly: no addition since, so the patient view keeps it until its hour is up
    assert "img/00007.png" in found(patient.refresh("wafers"), live["img/00007.png"], 1)
    assert "img/00007.png" not in found(eager.refresh("wafers"), live["img/00007.png"], 5)
    add(store, bucket, "wafers", ["img/late.png"], vectors(1, 8))  # an analysis adds: the stamp changes
    seen = patient.refresh("wafers")
    assert seen.vectors.n_items == N and found(seen, vectors(1, 8)[0], 1) == ["img/late.png"]
    assert "img/00007.png" not in found(seen, live["img/00007.png"], 5)
