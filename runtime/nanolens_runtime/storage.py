"""Object storage (MinIO in production, any S3 API in tests) with NanoLens errors.

The ``minio`` client is synchronous; async callers run these methods in a thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta

import urllib3
from minio import Minio
from minio.error import S3Error

from nanolens_runtime.errors import AlreadyExists, NotFound, Unavailable
from nanolens_runtime.settings import StorageSettings

_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NoSuchObject"}


#: the user-metadata header that holds an object's content sha256
SHA256_METADATA = "x-amz-meta-sha256"


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str
    content_type: str
    sha256: str = ""  # of the content, when the writer recorded it (gateway uploads do)


def _version(version_id: str | None) -> str:
    """S3 says "null" for objects in unversioned buckets; asking for version "null" is an error."""
    return "" if version_id in (None, "", "null") else version_id


def make_client(settings: StorageSettings) -> Minio:
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120), maxsize=16,
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(settings.s3_endpoint, access_key=settings.s3_access_key or None,
                 secret_key=settings.s3_secret_key or None, secure=settings.s3_secure,
                 region=settings.s3_region, http_client=http)


def _translate(exc: Exception, bucket: str, key: str = "") -> Exception:
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    if isinstance(exc, S3Error):
        if exc.code in _MISSING:
            return NotFound(f"{where} does not exist", resource_type="object", resource_name=where)
        return Unavailable(f"object storage refused {where}: {exc.code}")
    return Unavailable(f"object storage unreachable for {where}: {type(exc).__name__}")


class ObjectReader:
    """Sequential reads from one open GET (fewer requests than ranged GETs per block)."""

    def __init__(self, response, bucket: str, key: str):
        self.response = response
        self.where = (bucket, key)

    def read_exactly(self, n: int) -> bytes:
        parts, remaining = [], n
        try:
            while remaining:
                chunk = self.response.read(remaining)
                if not chunk:
                    raise Unavailable(f"s3://{self.where[0]}/{self.where[1]} ended {remaining} bytes early")
                parts.append(chunk)
                remaining -= len(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc, *self.where) from exc
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def close(self) -> None:
        self.response.close()
        self.response.release_conn()


class ObjectStore:
    def __init__(self, client: Minio):
        self.client = client

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> ObjectStore:
        return cls(make_client(settings))

    def ensure_bucket(self, bucket: str) -> None:
        try:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _translate(exc, bucket) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc, bucket) from exc

    def stat(self, bucket: str, key: str, version_id: str = "") -> ObjectInfo:
        try:
            st = self.client.stat_object(bucket, key, version_id=_version(version_id) or None)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, key) from exc
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return ObjectInfo(bucket, key, st.size or 0, (st.etag or "").strip('"'), _version(st.version_id),
                          st.content_type or "", meta.get(SHA256_METADATA, ""))

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except NotFound:
            return False
        return True

    def get(self, bucket: str, key: str, version_id: str = "", offset: int = 0, length: int = 0) -> bytes:
        """The object's bytes, or ``length`` bytes from ``offset`` (a ranged GET)."""
        response = None
        try:
            response = self.client.get_object(bucket, key, offset=offset, length=length,
                                              version_id=_version(version_id) or None)
            return response.read()
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, key) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def read_small(self, bucket: str, key: str, version_id: str = "",
                   limit: int = 256 << 10) -> tuple[ObjectInfo, bytes | None]:
        """What ``stat`` says of the object and, when it is at most ``limit`` bytes, its content: one
        ranged GET instead of a HEAD and a GET (a larger object costs ``limit`` bytes read in vain)."""
        response = None
        try:
            response = self.client.get_object(bucket, key, offset=0, length=limit,
                                              version_id=_version(version_id) or None)
            data = response.read()
            headers = response.headers
        except S3Error as exc:
            if exc.code == "InvalidRange":  # an empty object has no first byte
                return self.stat(bucket, key, version_id), b""
            raise _translate(exc, bucket, key) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc, bucket, key) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        whole = headers.get("Content-Range", "")  # "bytes 0-99/1234"; absent when the object was sent whole
        size = int(whole.rpartition("/")[2]) if whole else len(data)
        info = ObjectInfo(bucket, key, size, headers.get("ETag", "").strip('"'),
                          _version(headers.get("x-amz-version-id")), headers.get("Content-Type", ""),
                          headers.get(SHA256_METADATA, ""))
        return info, data if size == len(data) else None

    def open(self, bucket: str, key: str, version_id: str = "", offset: int = 0) -> ObjectReader:
        """A streaming reader from ``offset`` to the end: one GET, read block by block."""
        try:
            response = self.client.get_object(bucket, key, offset=offset, version_id=_version(version_id) or None)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, key) from exc
        return ObjectReader(response, bucket, key)

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream",
            overwrite: bool = True, sha256: str = "") -> ObjectInfo:
        """One PUT; ``sha256`` of the content is kept as object metadata, as ``put_stream`` keeps it."""
        if not overwrite and self.exists(bucket, key):
            raise AlreadyExists(f"s3://{bucket}/{key} already exists; choose another key")
        try:
            result = self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                                            metadata={"sha256": sha256} if sha256 else None)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, key) from exc
        return ObjectInfo(bucket, key, len(data), (result.etag or "").strip('"'), _version(result.version_id),
                          content_type, sha256)

    def put_stream(self, bucket: str, key: str, stream, content_type: str, part_size: int = 16 << 20,
                   sha256: str = "") -> ObjectInfo:
        """Multipart upload of a file-like object of unknown length; ``sha256`` of the content is
        kept as object metadata (S3's ETag of a multipart upload is not a content hash)."""
        metadata = {"sha256": sha256} if sha256 else None
        try:
            result = self.client.put_object(bucket, key, stream, -1, content_type=content_type, part_size=part_size,
                                            metadata=metadata)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, key) from exc
        return self.stat(bucket, key, _version(result.version_id))

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> list[str]:
        try:
            return [o.object_name for o in self.client.list_objects(bucket, prefix=prefix, recursive=recursive)]
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, prefix) from exc

    def list_etags(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Every object under ``prefix`` with its ETag (what a cache of their contents keys on)."""
        try:
            return {o.object_name: (o.etag or "").strip('"')
                    for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)}
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, bucket, prefix) from exc

    def presigned_get(self, bucket: str, key: str, version_id: str, expires_seconds: int) -> str:
        """A URL that GETs this version of ``bucket/key`` (ranged GETs too) for ``expires_seconds``."""
        return self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=expires_seconds),
                                                version_id=_version(version_id) or None)

    def presigned_put(self, bucket: str, key: str, expires_seconds: int, create_only: bool = False) -> str:
        """A URL that PUTs ``bucket/key`` for ``expires_seconds``. ``create_only``: ``If-None-Match: *`` is
        signed into it, so a PUT must send that header (else 403) and storage refuses it (412) once the
        key exists: the URL cannot replace what was stored, and analysed, through it."""
        if not create_only:
            return self.client.presigned_put_object(bucket, key, expires=timedelta(seconds=expires_seconds))
        return _presign(self.client, "PUT", bucket, key, expires_seconds, {"if-none-match": "*"})


def _presign(client: Minio, method: str, bucket: str, key: str, expires: int, headers: dict[str, str]) -> str:
    """A SigV4 presigned URL whose signature also covers ``headers`` (lower-case names): minio's own
    signs the host alone. Built from minio's signer (the version is pinned), as its presign_v4 does."""
    from urllib.parse import urlunsplit

    from minio import signer
    from minio import time as s3time
    from minio.helpers import queryencode, sha256_hash

    region = client._get_region(bucket)
    creds = client._provider.retrieve()
    query = {"X-Amz-Security-Token": creds.session_token} if creds.session_token else {}
    url = client._base_url.build(method=method, region=region, bucket_name=bucket, object_name=key,
                                 query_params=query)
    date = s3time.utcnow()
    scope = signer._get_scope(date, region, "s3")
    values = {"host": url.netloc, **headers}
    names = ";".join(sorted(values))
    url = url._replace(query=(url.query + "&" if url.query else "") + (
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={queryencode(creds.access_key + '/' + scope)}"
        f"&X-Amz-Date={s3time.to_amz_date(date)}&X-Amz-Expires={expires}&X-Amz-SignedHeaders={queryencode(names)}"))
    canonical = "\n".join([method, url.path or "/", signer._get_canonical_query_string(url.query),
                           "".join(f"{name}:{values[name]}\n" for name in sorted(values)), names, "UNSIGNED-PAYLOAD"])
    key_ = signer._get_signing_key(creds.secret_key, date, region, "s3")
    signature = signer._get_signature(key_, signer._get_string_to_sign(date, scope, sha256_hash(canonical)))
    return urlunsplit(url._replace(query=url.query + "&X-Amz-Signature=" + queryencode(signature)))
