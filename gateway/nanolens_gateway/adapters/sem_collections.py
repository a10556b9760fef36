"""Embedding collections of SEM images, kept in object storage, and search over them.

A collection ``<name>`` lives in the results bucket under ``sem/collections/<name>/``:
``collection.json`` names the autoencoder (name, version, sha256) and the embedding size; each
image is one small object ``items/<sha256 of bucket/key>.json`` (its bucket, key, version, ETag
and the float32 vector), written by the SEM analysis with ``embed=<name>``. One object per item
means concurrent analyses never overwrite each other's items, and analysing a new version of an
image replaces its item. A collection is tied to its model: adding or searching with another
autoencoder is refused.

The gateway keeps each collection's vectors in memory (:class:`nanolens_search.Vectors`). Every
added item rewrites the collection's ``stamp`` object; a search reads the stamp's ETag (one HEAD)
and, when it changed or a minute has passed, lists the item objects and reads only those that are
new or changed (by ETag); a deleted or replaced item's row is left out of every search from then
on and dropped when the rows are compacted. Below ``index_above`` items (20,000 by default) the
search is exact, a scan of every vector; from there on it walks an HNSW graph, which is stored
beside the items as ``index/hnsw.bin`` with each row's item object and ETag, so that another
gateway (or this one restarted) loads it and brings it up to date with the items that changed
since, instead of reading every item and building the graph again.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import hashlib
import io
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from nanolens_runtime.storage import ObjectStore
from nanolens_search import Vectors, new_index

PREFIX = "sem/collections/"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_K = 1000
INDEX_ABOVE = 20_000  # items from which a collection is searched through the graph (exact is fast enough below)
INDEX_KEY = "index/hnsw.bin"  # beside items/: 8 bytes of header length, the gzipped JSON header, the faiss graph
INDEX_FORMAT = 1
STAMP = "stamp"  # rewritten (a new ETag) after every item an analysis adds: a search lists the items when it changed
RELIST_SECONDS = 60.0  # and at least this often, to see items deleted from storage directly
REBUILD_DEAD = 0.25  # compact once a quarter of the rows are deleted or replaced items
SAVE_CHANGED = 0.10  # store the graph again once a tenth of its rows changed since it was stored


def check_name(name: str, field_name: str = "collection") -> str:
    if not NAME.match(name or "") or ".." in name:
        raise InvalidArgument(f"collection name {name!r} must be 1-64 letters, digits, '-', '_' or '.', starting "
                              "with a letter or digit", field=field_name)
    return name


#: Instrument metadata kept with each embedding: its type, and the filters on it (SearchCollection's where).
METADATA = {"detector": str, "magnification": float, "pixel_size_nm": float, "acquired": str}
FILTERS = {"detector": "detector", "magnification_min": "magnification", "magnification_max": "magnification",
           "pixel_size_nm_min": "pixel_size_nm", "pixel_size_nm_max": "pixel_size_nm", "acquired_from": "acquired",
           "acquired_to": "acquired"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def metadata_filter(where: dict[str, str]) -> Callable[[dict], bool]:
    """A predicate on an item's metadata that holds when every entry of ``where`` matches; an
    unknown field or a value that is not a number or a date is refused (INVALID_ARGUMENT)."""
    tests = []
    for name, raw in sorted(where.items()):
        if name not in FILTERS:
            raise InvalidArgument(f"unknown filter field {name!r}; fields: {', '.join(FILTERS)}", field=f"where.{name}")
        value = raw.strip()
        field_name = FILTERS[name]
        if name == "detector":
            if not value:
                raise InvalidArgument("filter detector needs a name (or part of one), e.g. SE2", field="where.detector")
            part = value.lower()
            tests.append(lambda m, v=part: v in str(m.get("detector", "")).lower())
        elif field_name == "acquired":
            try:
                ok = bool(DATE.match(value)) and bool(datetime.date.fromisoformat(value))
            except ValueError:
                ok = False
            if not ok:
                raise InvalidArgument(f"filter {name}={raw!r} must be a date YYYY-MM-DD", field=f"where.{name}")
            after = name.endswith("_from")
            tests.append(lambda m, v=value, a=after: bool(m.get("acquired")) and (m["acquired"] >= v if a
                                                                                   else m["acquired"] <= v))
        else:
            try:
                number = float(value)
            except ValueError:
                raise InvalidArgument(f"filter {name}={raw!r} must be a number", field=f"where.{name}") from None
            least = name.endswith("_min")
            tests.append(lambda m, v=number, f=field_name, lo=least: m.get(f) is not None and (
                m[f] >= v if lo else m[f] <= v))
    return lambda meta: all(t(meta) for t in tests)


def model_record(model: common_pb2.ModelInfo) -> dict:
    return {"name": model.name, "version": model.version, "sha256": model.sha256}


def item_key(collection: str, bucket: str, key: str) -> str:
    return f"{PREFIX}{collection}/items/{hashlib.sha256(f'{bucket}/{key}'.encode()).hexdigest()[:40]}.json"


def _load_json(store: ObjectStore, bucket: str, key: str) -> dict | None:
    if not store.exists(bucket, key):
        return None
    return json.loads(store.get(bucket, key))


def describe(store: ObjectStore, bucket: str, collection: str) -> dict | None:
    """The collection's record, or None when it does not exist."""
    return _load_json(store, bucket, f"{PREFIX}{collection}/collection.json")


def add(store: ObjectStore, bucket: str, collection: str, model: common_pb2.ModelInfo, source, vector: np.ndarray,
        metadata: dict | None = None) -> str:
    """Put one image's embedding into ``collection`` (created on first use), with the instrument
    ``metadata`` searches filter on (:data:`METADATA`); returns the item's key. Refused
    (FAILED_PRECONDITION) when the collection was made by another model."""
    record = describe(store, bucket, collection)
    mine = model_record(model)
    if record is None:
        record = {"name": collection, "model": mine, "dim": int(vector.size),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        store.put(bucket, f"{PREFIX}{collection}/collection.json", json.dumps(record, indent=1).encode(),
                  "application/json")
    elif record["model"]["sha256"] != mine["sha256"] or record["dim"] != vector.size:
        raise FailedPrecondition(
            f"collection {collection!r} holds embeddings of {record['model']['name']} {record['model']['version']}, "
            f"not of {mine['name']} {mine['version']}: use that model, or another collection name")
    key = item_key(collection, source.bucket, source.key)
    item = {"bucket": source.bucket, "key": source.key, "version_id": source.version_id, "etag": source.etag,
            "metadata": {k: v for k, v in (metadata or {}).items() if k in METADATA and v is not None},
            "vector": base64.b64encode(np.ascontiguousarray(vector, "<f4").tobytes()).decode()}
    store.put(bucket, key, json.dumps(item).encode(), "application/json")
    store.put(bucket, f"{PREFIX}{collection}/{STAMP}", uuid.uuid4().hex.encode(), "text/plain")  # after the item
    return key



class _Chain(io.RawIOBase):
    """Read-only stream over byte buffers one after the other (an upload without joining them)."""

    def __init__(self, *parts):
        self.parts = [memoryview(p).cast("B") for p in parts]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.parts and not len(self.parts[0]):
            self.parts.pop(0)
        if not self.parts:
            return 0
        n = min(len(buffer), len(self.parts[0]))
        buffer[:n] = self.parts[0][:n]
        self.parts[0] = self.parts[0][n:]
        return n


@dataclass
class LoadedCollection:
    """A collection as this gateway holds it: its record, its rows (key: the item object, tag: its
    ETag, object: bucket, key, version_id, metadata) and how many rows changed since the graph was
    stored."""

    record: dict
    vectors: Vectors
    unsaved: int = 0
    stamp: str | None = None  # the stamp's ETag read before the items were last listed
    listed: float = -math.inf  # time.monotonic() then


class Collections:
    """The gateway's view of the collections: loaded on first search, from the stored graph when
    there is one, and brought up to date with the item objects (by ETag) on every search."""

    def __init__(self, store: ObjectStore, bucket: str, index_above: int = INDEX_ABOVE,
                 relist_seconds: float = RELIST_SECONDS, readers: int = 8):
        self.store = store
        self.bucket = bucket
        self.index_above = index_above
        self.relist_seconds = relist_seconds
        self._loaded: dict[str, LoadedCollection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="collection-read")

    def _read_item(self, key: str) -> dict | None:
        try:
            return json.loads(self.store.get(self.bucket, key))
        except NotFound:  # deleted since the listing
            return None

    def _stamp(self, name: str) -> str:
        try:
            return self.store.stat(self.bucket, f"{PREFIX}{name}/{STAMP}").etag
        except NotFound:
            return ""

    def refresh(self, name: str) -> LoadedCollection:
        """The collection brought up to date: one HEAD of its stamp when no analysis added to it
        since it was last listed (and that was less than ``relist_seconds`` ago), else a listing
        of its items and a read of those new or changed."""
        stamp = self._stamp(name)
        loaded = self._loaded.get(name)
        if loaded is not None and stamp == loaded.stamp and time.monotonic() - loaded.listed < self.relist_seconds:
            return loaded
        record = describe(self.store, self.bucket, name)
        if record is None:
            raise NotFound(f"no collection {name!r} (make one with an SEM analysis and the option embed={name})",
                           "collection", name)
        if loaded is None or loaded.record["model"] != record["model"]:
            loaded = self.restore(name, record) or LoadedCollection(record, Vectors(new_index(record["dim"], False)))
        vectors = loaded.vectors
        listed = time.monotonic()
        listing = self.store.list_etags(self.bucket, f"{PREFIX}{name}/items/")
        changed = [k for k, etag in listing.items() if vectors.tag_of(k) != etag]
        gone = [k for k in vectors.rows if k not in listing or k in changed]
        if changed or gone:
            read = [(k, listing[k], item) for k, item in zip(changed, self._pool.map(self._read_item, changed),
                                                             strict=True) if item is not None]
            with vectors.guard:
                vectors.drop(gone)
                vectors.append([k for k, _, _ in read], [etag for _, etag, _ in read],
                               [{"bucket": i["bucket"], "key": i["key"], "version_id": i["version_id"],
                                 "metadata": i.get("metadata", {})} for _, _, i in read],
                               np.array([np.frombuffer(base64.b64decode(i["vector"]), "<f4") for _, _, i in read]))
            loaded.unsaved += len(gone) + len(read)
        graph = vectors.n_items >= self.index_above
        if len(vectors.keys) - vectors.n_items > REBUILD_DEAD * len(vectors.keys) or vectors.graph != graph:
            loaded = LoadedCollection(record, vectors.compacted(graph), vectors.n_items)
        if loaded.vectors.graph and loaded.unsaved > SAVE_CHANGED * loaded.vectors.n_items:
            self.save(name, loaded)
        loaded.stamp, loaded.listed = stamp, listed
        self._loaded[name] = loaded
        return loaded

    def save(self, name: str, loaded: LoadedCollection) -> None:
        """Store the graph beside the collection with each row's item object and ETag, as one object
        (a reader never sees a graph with another one's rows)."""
        v = loaded.vectors
        header = gzip.compress(json.dumps({
            "format": INDEX_FORMAT, "model": loaded.record["model"]["sha256"], "dim": loaded.record["dim"],
            "rows": [None if k is None else [k, t, o] for k, t, o in zip(v.keys, v.tags, v.objects, strict=True)],
        }).encode())
        with v.guard:
            graph = faiss.serialize_index(v.index)
        self.store.put_stream(self.bucket, f"{PREFIX}{name}/{INDEX_KEY}",
                              io.BufferedReader(_Chain(len(header).to_bytes(8, "little"), header, graph)),
                              "application/octet-stream")
        loaded.unsaved = 0

    def restore(self, name: str, record: dict) -> LoadedCollection | None:
        """The stored graph, or None when there is none or it was made by another model or format
        (then it is rebuilt from the items)."""
        try:
            reader = self.store.open(self.bucket, f"{PREFIX}{name}/{INDEX_KEY}")
        except NotFound:
            return None
        try:
            header = json.loads(gzip.decompress(reader.read_exactly(int.from_bytes(reader.read_exactly(8), "little"))))
            if (header.get("format"), header.get("model"), header.get("dim")) != (
                    INDEX_FORMAT, record["model"]["sha256"], record["dim"]):
                return None
            index = faiss.read_index(faiss.PyCallbackIOReader(reader.read_exactly))
        finally:
            reader.close()
        rows = header["rows"]
        if index.ntotal != len(rows):
            return None
        vectors = Vectors(index, [r and r[0] for r in rows], [r[1] if r else "" for r in rows],
                          [r[2] if r else {} for r in rows])
        vectors.reselect()
        return LoadedCollection(record, vectors)

    async def load(self, name: str) -> LoadedCollection:
        check_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self.refresh, name)

    def row_of(self, loaded: LoadedCollection, bucket: str, key: str) -> int:
        return loaded.vectors.rows.get(item_key(loaded.record["name"], bucket, key), -1)
