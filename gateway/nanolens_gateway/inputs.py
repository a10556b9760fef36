"""The objects callers may name: the one place where buckets and object keys are checked."""

from __future__ import annotations

import re
import unicodedata
import uuid
from pathlib import PurePosixPath

from nanolens.common.v1 import common_pb2
from nanolens_gateway.settings import GatewaySettings
from nanolens_runtime.errors import InvalidArgument

MAX_KEY_BYTES = 1024  # S3's limit


def validate_key(key: str, field: str) -> str:
    """An object key as instruments write them: any UTF-8 text S3 takes (accents, '#', '[]', spaces),
    at most 1024 bytes, relative, without empty, '.' or '..' parts and without control characters."""
    if not key:
        raise InvalidArgument(f"{field} is empty", field=field)
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field} {key!r} is not valid UTF-8 text", field=field) from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_KEY_BYTES} bytes", field=field)
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidArgument(f"{field} {key!r} must be a relative path without empty, '.' or '..' parts",
                              field=field)
    control = sorted({f"U+{ord(c):04X}" for c in key if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn")})
    if control:
        raise InvalidArgument(f"{field} {key!r} holds control or unassigned characters ({', '.join(control)})",
                              field=field)
    return key


def validate_prefix(prefix: str, field: str) -> str:
    """A key prefix to list: relative, without '..' segments."""
    if ".." in prefix.split("/") or prefix.startswith("/"):
        raise InvalidArgument(f"{field} {prefix!r} must be relative, without '..'", field=field)
    return prefix


def safe_name(filename: str) -> str:
    """The last part of a caller's file name, reduced to characters every store and shell takes."""
    name = PurePosixPath(filename.replace("\\", "/")).name or "upload.bin"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def fresh_upload_key(filename: str, prefix: str = "") -> str:
    """A new key for a presigned upload (its content is not known yet), under the caller's prefix."""
    return f"{prefix}uploads/{uuid.uuid4().hex}/{safe_name(filename)}"


def content_upload_key(sha256: str, filename: str, prefix: str = "") -> str:
    """The key of an upload named by its content: ``<caller's prefix>uploads/<sha256[:32]>/<name>``."""
    return f"{prefix}uploads/{sha256[:32]}/{safe_name(filename)}"


class Buckets:
    """The gateway's buckets: ``raw`` (uploads, the default input), ``results``, and the other
    buckets whose objects may be analysed (NANOLENS_INPUT_BUCKETS)."""

    def __init__(self, settings: GatewaySettings):
        self.raw = settings.raw_bucket
        self.results = settings.results_bucket
        self.inputs = {settings.raw_bucket, *(b.strip() for b in settings.input_buckets.split(",") if b.strip())}

    def input_bucket(self, bucket: str, field: str) -> str:
        """``bucket`` (empty: the raw bucket) when its objects may be analysed."""
        bucket = bucket or self.raw
        if bucket not in self.inputs:
            raise InvalidArgument(f"bucket {bucket!r} is not an input bucket (NANOLENS_RAW_BUCKET or "
                                  f"NANOLENS_INPUT_BUCKETS: {sorted(self.inputs)})", field=field)
        return bucket

    def input_object(self, ref: common_pb2.ObjectRef, field: str) -> tuple[str, str, str]:
        """(bucket, key, version id) of an object to analyse, named in the request's ``field``."""
        return self.input_bucket(ref.bucket, f"{field}.bucket"), validate_key(ref.key, f"{field}.key"), ref.version_id

    def readable_object(self, ref: common_pb2.ObjectRef, field: str) -> tuple[str, str, str]:
        """(bucket, key, version id) of an object to download: an input or a result (empty bucket: results)."""
        bucket = ref.bucket or self.results
        if bucket != self.results and bucket not in self.inputs:
            raise InvalidArgument(f"bucket {bucket!r} cannot be read through the gateway", field=f"{field}.bucket")
        return bucket, validate_key(ref.key, f"{field}.key"), ref.version_id
