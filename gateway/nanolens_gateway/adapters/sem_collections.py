"""Embedding collections of SEM images, kept in object storage, and exact search over them.

A collection ``<name>`` lives in the results bucket under ``sem/collections/<name>/``:
``collection.json`` names the autoencoder (name, version, sha256) and the embedding size; each
image is one small object ``items/<sha256 of bucket/key>.json`` (its bucket, key, version, ETag
and the float32 vector), written by the SEM analysis with ``embed=<name>``. One object per item
means concurrent analyses never overwrite each other's items, and analysing a new version of an
image replaces its item. A collection is tied to its model: adding or searching with another
autoencoder is refused.

Search keeps each collection's matrix in memory and, per query, lists the item objects and reads
only those that are new or changed (by ETag), so a search costs one listing plus a matrix
product (the exact top k of :func:`nanolens_search.top_k`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from nanolens.common.v1 import common_pb2
from nanolens_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from nanolens_runtime.storage import ObjectStore

PREFIX = "sem/collections/"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_K = 1000


def check_name(name: str, field_name: str = "collection") -> str:
    if not NAME.match(name or "") or ".." in name:
        raise InvalidArgument(f"collection name {name!r} must be 1-64 letters, digits, '-', '_' or '.', starting "
                              "with a letter or digit", field=field_name)
    return name


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


def add(store: ObjectStore, bucket: str, collection: str, model: common_pb2.ModelInfo, source, vector: np.ndarray
        ) -> str:
    """Put one image's embedding into ``collection`` (created on first use); returns the item's key.
    Refused (FAILED_PRECONDITION) when the collection was made by another model."""
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
            "vector": base64.b64encode(np.ascontiguousarray(vector, "<f4").tobytes()).decode()}
    store.put(bucket, key, json.dumps(item).encode(), "application/json")
    return key


@dataclass
class LoadedCollection:
    """A collection's items in memory: item object -> ETag, and the rows they fill."""

    record: dict
    etags: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    objects: list[dict] = field(default_factory=list)  # per row: bucket, key, version_id
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


class Collections:
    """The gateway's view of the collections: loaded on first search, refreshed by ETag."""

    def __init__(self, store: ObjectStore, bucket: str, readers: int = 8):
        self.store = store
        self.bucket = bucket
        self._loaded: dict[str, LoadedCollection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="collection-read")

    def _refresh(self, name: str) -> LoadedCollection:
        record = describe(self.store, self.bucket, name)
        if record is None:
            raise NotFound(f"no collection {name!r} (make one with an SEM analysis and the option embed={name})",
                           "collection", name)
        loaded = self._loaded.get(name)
        if loaded is None or loaded.record["model"] != record["model"]:
            loaded = LoadedCollection(record, matrix=np.zeros((0, record["dim"]), np.float32))
        listing = self.store.list_etags(self.bucket, f"{PREFIX}{name}/items/")
        changed = [k for k, etag in listing.items() if loaded.etags.get(k) != etag]
        if not changed and len(listing) == len(loaded.etags):
            return loaded
        items = dict(zip(changed, self._pool.map(lambda k: json.loads(self.store.get(self.bucket, k)), changed),
                         strict=True))
        keys = sorted(listing)
        matrix = np.empty((len(keys), record["dim"]), np.float32)
        objects = []
        for row, key in enumerate(keys):
            if key in items:
                item = items[key]
                matrix[row] = np.frombuffer(base64.b64decode(item["vector"]), "<f4")
                objects.append({"bucket": item["bucket"], "key": item["key"], "version_id": item["version_id"]})
            else:
                old = loaded.rows[key]
                matrix[row] = loaded.matrix[old]
                objects.append(loaded.objects[old])
        loaded = LoadedCollection(record, dict(listing), {k: i for i, k in enumerate(keys)}, objects, matrix)
        self._loaded[name] = loaded
        return loaded

    async def load(self, name: str) -> LoadedCollection:
        check_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._refresh, name)

    def row_of(self, loaded: LoadedCollection, bucket: str, key: str) -> int:
        return loaded.rows.get(item_key(loaded.record["name"], bucket, key), -1)
