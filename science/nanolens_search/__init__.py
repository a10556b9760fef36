"""Nearest neighbours among L2-normalised embedding vectors, as the gateway's SEM collections serve
them and the benchmarks time them: :class:`Vectors` holds the rows (an item's key, its version tag,
what a hit returns) and their vectors in a faiss index, an exact scan (``IndexFlatIP``) or an HNSW
graph (``IndexHNSWFlat``); :func:`search` finds the nearest rows a filter accepts.

A dropped row (a deleted or replaced item) stays in the index as a tombstone that a selector keeps
out of every search, until :meth:`Vectors.compacted` makes a fresh index of the live rows. It
depends on numpy and faiss alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

# The graph: M 32 and efConstruction 80 find 0.99 of the exact top 10 at efSearch 128 over 10^5
# clustered vectors where M 16 and efConstruction 40 found 0.88 (make bench has the figures).
HNSW_M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 128
MAX_GRAPH_FETCH = 1024  # candidates beyond which a (filtered) search scans exactly


def new_index(dim: int, graph: bool) -> faiss.Index:
    """An empty HNSW graph over inner products, or an exact scan."""
    if not graph:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    return index


@dataclass
class Vectors:
    """Rows, row = faiss label. ``keys[row]`` is None once the row was dropped."""

    index: faiss.Index
    keys: list[str | None] = field(default_factory=list)  # per row: the item's key
    tags: list[str] = field(default_factory=list)  # per row: the item's version when added (an ETag)
    objects: list[dict] = field(default_factory=list)  # per row: what a hit returns
    rows: dict[str, int] = field(default_factory=dict)  # live key -> row
    guard: threading.Lock = field(default_factory=threading.Lock)  # a faiss index is not searched while it grows
    _bitmap: np.ndarray | None = None  # live rows, one bit each (the selector points into it)
    selector: faiss.IDSelector | None = None  # None: every row is live

    @property
    def n_items(self) -> int:
        return len(self.rows)

    @property
    def graph(self) -> bool:
        return isinstance(self.index, faiss.IndexHNSW)

    def tag_of(self, key: str) -> str | None:
        row = self.rows.get(key)
        return None if row is None else self.tags[row]

    def vector(self, row: int) -> np.ndarray:
        with self.guard:  # an add may move the vectors
            return self.index.reconstruct(row)

    def reselect(self) -> None:
        """Point the selector at the live rows (after rows were dropped or restored)."""
        self.rows = {k: i for i, k in enumerate(self.keys) if k is not None}
        if len(self.rows) == len(self.keys):
            self._bitmap = self.selector = None
            return
        live = np.array([k is not None for k in self.keys])
        self._bitmap = np.packbits(live, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(self._bitmap))

    def drop(self, keys) -> None:
        for key in keys:
            self.keys[self.rows[key]] = None
        self.reselect()

    def append(self, keys: list[str], tags: list[str], objects: list[dict], vectors: np.ndarray) -> None:
        """New rows: each item's key, version tag, what a hit returns, and its vector."""
        if not keys:
            return
        self.index.add(np.ascontiguousarray(vectors, np.float32))
        self.keys += keys
        self.tags += tags
        self.objects += objects
        self.reselect()

    def compacted(self, graph: bool) -> Vectors:
        """The live rows in a fresh index: a graph, or an exact scan."""
        live = sorted(self.rows.values())
        fresh = Vectors(new_index(self.index.d, graph))
        if live:
            fresh.append([self.keys[r] for r in live], [self.tags[r] for r in live], [self.objects[r] for r in live],
                         self.index.reconstruct_n(0, len(self.keys))[live])
        return fresh

    def candidates(self, query: np.ndarray, k: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` live rows most similar to ``query`` (about, through the graph), best first,
        with their cosine similarities."""
        k = min(k, self.n_items)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        if self.graph and not exact:
            index, params = self.index, faiss.SearchParametersHNSW(efSearch=max(EF_SEARCH, k), sel=self.selector)
        else:
            index = faiss.downcast_index(self.index.storage) if self.graph else self.index
            params = faiss.SearchParameters(sel=self.selector)
        scores, rows = index.search(q, k, params=params)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]


def search(vectors: Vectors, query: np.ndarray, k: int, exclude: int = -1,
           may: Callable[[dict], bool] = lambda o: True) -> list[tuple[int, float]]:
    """The ``k`` rows most similar to ``query`` (row ``exclude`` left out) whose objects ``may``
    accepts, best first, with their cosine similarities. A filter that turns down many of the
    nearest widens the search eightfold at a time; past ``MAX_GRAPH_FETCH`` candidates the scan is
    exact, and in the end it reaches every row, so k hits come back whenever k are accepted."""
    wanted = k + (exclude >= 0)
    while True:
        with vectors.guard:
            rows, scores = vectors.candidates(query, wanted, exact=wanted > MAX_GRAPH_FETCH)
        hits = [(int(r), float(s)) for r, s in zip(rows, scores, strict=True)
                if r != exclude and may(vectors.objects[r])][:k]
        if len(hits) == k or wanted >= vectors.n_items:
            return hits
        wanted *= 8
