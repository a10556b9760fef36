"""The object store against a real S3 API server (moto) with the real minio client."""

from __future__ import annotations

import io

import pytest

from nanolens_runtime.errors import AlreadyExists, NotFound
from nanolens_runtime.storage import ObjectStore


def test_multipart_upload_then_ranged_reads(store: ObjectStore):
    store.ensure_bucket("raw")
    data = bytes(range(256)) * ((17 << 20) // 256)  # over one 16 MiB part: a multipart upload
    info = store.put_stream("raw", "big/object.bin", io.BytesIO(data), "application/octet-stream")
    assert info.size == len(data)
    again = store.stat("raw", "big/object.bin", info.version_id)
    assert again.etag == info.etag
    assert store.get("raw", "big/object.bin", info.version_id, offset=1000, length=10) == data[1000:1010]


def test_missing_objects_and_buckets_are_not_found(store: ObjectStore):
    store.ensure_bucket("raw")
    with pytest.raises(NotFound, match="does not exist"):
        store.stat("raw", "nope")
    with pytest.raises(NotFound):
        store.get("no-such-bucket-here", "x")
    assert store.list("raw", prefix="nothing/") == []


def test_put_without_overwrite_keeps_what_is_stored(store: ObjectStore):
    store.ensure_bucket("raw")
    store.put("raw", "keep/me", b"first")
    with pytest.raises(AlreadyExists):
        store.put("raw", "keep/me", b"second", overwrite=False)
    assert store.get("raw", "keep/me") == b"first"
