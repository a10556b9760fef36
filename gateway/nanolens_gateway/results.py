"""Results in object storage: identity, layout and the cache that identity gives.

A result's identity is the input's exact content (bucket, key, version, ETag), the
analysis, the model's name, version and graph sha256, the sha256 of the service code around
the model, the sha256 of the gateway code that decodes the input and summarises the answer
(:mod:`nanolens_gateway.code_identity`), and the options. The same identity returns the stored
result instead of computing it again. Results live next
to their input::

    results/<input bucket>/<input key>/<analysis>/<identity[:16]>/result.json
                                                               .../<artefact files>

``result.json`` is written last, after every artefact it lists, so its presence means the result
is complete: a gateway that dies while writing leaves no result, and the next request computes it
again. The artefacts are written concurrently; a picture given as a function is drawn in a worker
thread while the others are written (the numbers do not wait for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from nanolens.common.v1 import common_pb2
from nanolens_runtime.bundles import sha256_bytes
from nanolens_runtime.errors import NotFound
from nanolens_runtime.storage import ObjectInfo, ObjectStore

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Artefact:
    name: str
    data: bytes | Callable[[], bytes]  # bytes, or a function that makes them (drawn while others are written)
    media_type: str


def identity(source: ObjectInfo, analysis: str, model: common_pb2.ModelInfo, options: dict[str, str],
             adapter_code: str) -> str:
    doc = {
        "input": [source.bucket, source.key, source.version_id, source.etag],
        "analysis": analysis,
        "model": [model.name, model.version, model.sha256, model.code_sha256],
        "adapter": adapter_code,
        "options": sorted(options.items()),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def result_prefix(source: ObjectInfo, analysis: str, ident: str) -> str:
    return f"{source.bucket}/{source.key}/{analysis}/{ident[:16]}/"


class ResultStore:
    def __init__(self, store: ObjectStore, bucket: str):
        self.store = store
        self.bucket = bucket

    def load(self, prefix: str) -> dict | None:
        try:
            return json.loads(self.store.get(self.bucket, prefix + RESULT_FILE))
        except NotFound:
            return None

    async def save(self, prefix: str, doc: dict, artefacts: list[Artefact]) -> dict:
        """Write the artefacts (at once, each in a worker thread), then the result document listing
        them; returns the document. Fails, storing no document, when any artefact fails."""
        listed = await asyncio.gather(*(asyncio.to_thread(self._write, prefix, a) for a in artefacts))
        doc = dict(doc, artifacts=listed, result={"bucket": self.bucket, "key": prefix + RESULT_FILE})
        await asyncio.to_thread(self.store.put, self.bucket, prefix + RESULT_FILE,
                                json.dumps(doc, indent=1).encode(), "application/json")
        return doc

    def _write(self, prefix: str, artefact: Artefact) -> dict:
        data = artefact.data() if callable(artefact.data) else artefact.data
        key = prefix + artefact.name
        self.store.put(self.bucket, key, data, artefact.media_type)
        return {"name": artefact.name, "media_type": artefact.media_type, "bucket": self.bucket, "key": key,
                "size_bytes": len(data), "sha256": sha256_bytes(data)}


def artefact_protos(doc: dict) -> list[common_pb2.Artifact]:
    return [
        common_pb2.Artifact(name=a["name"], media_type=a["media_type"],
                            ref=common_pb2.ObjectRef(bucket=a["bucket"], key=a["key"]),
                            size_bytes=a["size_bytes"], sha256=a["sha256"])
        for a in doc.get("artifacts", [])
    ]
