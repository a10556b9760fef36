"""The object store against the stack's S3 server (SeaweedFS) with the real minio client: every
S3 feature NanoLens uses, as it uses it (docs/operations.md lists them)."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import S3Error
from minio.versioningconfig import VersioningConfig

from nanolens_runtime.errors import AlreadyExists, NotFound, Unavailable
from nanolens_runtime.storage import ObjectStore


def _put_url(url: str, data: bytes, **headers: str) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_etag_is_the_contents_identity(store: ObjectStore):
    """Stored results are keyed on (bucket, key, version, ETag): the ETag must follow the bytes."""
    store.ensure_bucket("raw")
    first = store.put("raw", "etag/a.txt", b"hello")
    assert first.etag == hashlib.md5(b"hello").hexdigest() == store.stat("raw", "etag/a.txt").etag
    assert store.put("raw", "etag/a.txt", b"hello").etag == first.etag  # the same bytes, the same identity
    assert store.put("raw", "etag/a.txt", b"hellp").etag != first.etag
    assert first.version_id == ""  # an unversioned bucket says "null", which reads as no version


def test_a_versioned_bucket_keeps_every_version_readable(store: ObjectStore):
    store.ensure_bucket("versioned")
    store.client.set_bucket_versioning("versioned", VersioningConfig(ENABLED))
    one, two = store.put("versioned", "k", b"one"), store.put("versioned", "k", b"two")
    assert one.version_id and two.version_id and one.version_id != two.version_id
    assert store.get("versioned", "k", one.version_id) == b"one" and store.get("versioned", "k") == b"two"
    assert store.stat("versioned", "k", one.version_id).etag == one.etag


def test_a_small_object_is_read_whole_with_what_stat_says_in_one_request(store: ObjectStore):
    store.ensure_bucket("versioned")
    store.client.set_bucket_versioning("versioned", VersioningConfig(ENABLED))
    small = store.put("versioned", "small/a.npy", b"x" * 100, "application/x-npy", sha256="ab" * 32)
    store.put("versioned", "small/a.npy", b"y" * 100)  # a newer version: the older one is still read by id
    info, data = store.read_small("versioned", "small/a.npy", small.version_id, limit=100)
    assert data == b"x" * 100 and info == store.stat("versioned", "small/a.npy", small.version_id)
    assert info.sha256 == "ab" * 32 and info.content_type == "application/x-npy"
    store.put("versioned", "small/big.bin", bytes(range(256)) * 4)
    info, data = store.read_small("versioned", "small/big.bin", limit=1000)  # one byte over the limit
    assert data is None and info == store.stat("versioned", "small/big.bin") and info.size == 1024
    store.put("versioned", "small/empty", b"")
    info, data = store.read_small("versioned", "small/empty")
    assert data == b"" and info == store.stat("versioned", "small/empty")
    with pytest.raises(NotFound):
        store.read_small("versioned", "small/missing")


def test_multipart_upload_then_ranged_reads(store: ObjectStore):
    store.ensure_bucket("raw")
    data = bytes(range(256)) * ((17 << 20) // 256)  # over one 16 MiB part: a multipart upload
    info = store.put_stream("raw", "big/object.bin", io.BytesIO(data), "application/octet-stream", sha256="ab12")
    assert info.size == len(data) and info.etag.endswith("-2")  # S3's multipart ETag: not a content hash
    assert info.sha256 == "ab12"  # which is why the content's sha256 travels as metadata
    again = store.stat("raw", "big/object.bin", info.version_id)
    assert again.etag == info.etag
    assert store.get("raw", "big/object.bin", info.version_id, offset=1000, length=10) == data[1000:1010]
    boundary = 16 << 20  # a range across the two parts
    assert store.get("raw", "big/object.bin", offset=boundary - 5, length=10) == data[boundary - 5:boundary + 5]
    reader = store.open("raw", "big/object.bin", offset=len(data) - 100)
    try:
        assert reader.read_exactly(100) == data[-100:]
    finally:
        reader.close()


def test_presigned_put_and_get(store: ObjectStore):
    store.ensure_bucket("raw")
    url = store.presigned_put("raw", "presigned/upload.bin", 300)
    assert _put_url(url, b"from an instrument") == 200
    assert store.get("raw", "presigned/upload.bin") == b"from an instrument"
    get_url = store.client.presigned_get_object("raw", "presigned/upload.bin", expires=timedelta(minutes=5))
    with urllib.request.urlopen(get_url, timeout=30) as response:
        assert response.read() == b"from an instrument"
    assert _put_url(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), b"forged") == 403


def test_conditional_writes_refuse_to_replace_or_race(store: ObjectStore):
    """If-None-Match: * (create only) and If-Match: ETag (replace only what was read), the means
    for a presigned upload that cannot overwrite analysed data."""
    store.ensure_bucket("raw")
    url = store.presigned_put("raw", "conditional/once.bin", 300)
    assert _put_url(url, b"first", **{"If-None-Match": "*"}) == 200
    assert _put_url(url, b"second", **{"If-None-Match": "*"}) == 412
    assert store.get("raw", "conditional/once.bin") == b"first"
    etag = store.stat("raw", "conditional/once.bin").etag
    assert _put_url(url, b"third", **{"If-Match": '"00000000000000000000000000000000"'}) == 412
    assert _put_url(url, b"third", **{"If-Match": f'"{etag}"'}) == 200
    assert store.get("raw", "conditional/once.bin") == b"third"


def test_a_create_only_url_needs_its_header_and_never_replaces(store: ObjectStore):
    store.ensure_bucket("raw")
    url = store.presigned_put("raw", "create-only/sample [1]/é.bin", 300, create_only=True)
    assert _put_url(url, b"without the header") == 403  # the header is part of the signature
    assert _put_url(url, b"first", **{"If-None-Match": "*"}) == 200
    assert _put_url(url, b"junk", **{"If-None-Match": "*"}) == 412
    assert store.get("raw", "create-only/sample [1]/é.bin") == b"first"


def test_listing_by_prefix_with_unicode_and_awkward_keys(store: ObjectStore):
    store.ensure_bucket("listing")
    keys = ["données/é.txt", "run#3.txt", "sample [1].txt", "a b/c+d.txt", "日本/語.bin", "deep/x/y/z.txt",
            "deep/x.txt"]
    for key in keys:
        store.put("listing", key, key.encode())
    assert sorted(store.list("listing")) == sorted(keys)
    assert all(store.get("listing", key) == key.encode() for key in keys)
    assert store.list("listing", prefix="données/") == ["données/é.txt"]
    assert sorted(store.list("listing", prefix="deep/")) == ["deep/x.txt", "deep/x/y/z.txt"]
    assert sorted(store.list("listing", prefix="deep/", recursive=False)) == ["deep/x.txt", "deep/x/"]
    assert store.list_etags("listing", prefix="run#") == {"run#3.txt": hashlib.md5(b"run#3.txt").hexdigest()}


def test_listing_pages_past_a_thousand_keys(store: ObjectStore):
    store.ensure_bucket("paging")
    for i in range(1005):
        store.put("paging", f"many/{i:05d}", b"x")
    assert len(store.list("paging", prefix="many/")) == 1005


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


def test_wrong_credentials_are_refused(s3_server):
    """A real store checks signatures (moto accepted any key)."""
    intruder = ObjectStore(Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key="not-the-secret",
                                 secure=False))
    with pytest.raises(Unavailable, match="SignatureDoesNotMatch"):
        intruder.ensure_bucket("raw")
    with pytest.raises(S3Error):
        Minio(s3_server.endpoint, secure=False).list_buckets()  # anonymous
