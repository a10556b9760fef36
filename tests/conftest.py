"""Shared fixtures: the stack's object store (SeaweedFS) on loopback, a minio-backed store, the stack."""

from __future__ import annotations

import uuid

import pytest

from nanolens_cli.stack import EmbeddedStore, Stack, free_port
from nanolens_runtime.settings import StorageSettings
from nanolens_runtime.storage import ObjectStore
from support import LIMIT_MB


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> EmbeddedStore:
    """SeaweedFS alone, as the stack runs it, for the tests that need only storage."""
    with EmbeddedStore(tmp_path_factory.mktemp("s3"), "127.0.0.1", free_port()).serving() as server:
        yield server


@pytest.fixture
def storage_settings(s3_server) -> StorageSettings:
    return StorageSettings(s3_endpoint=s3_server.endpoint, s3_access_key=s3_server.access_key,
                           s3_secret_key=s3_server.secret_key, models_bucket=f"models-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(storage_settings) -> ObjectStore:
    return ObjectStore.from_settings(storage_settings)



@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """S3 server, spectra service and gateway as real processes, shared by the tests that need them."""
    env = {"NANOLENS_MAX_OBJECT_MB": str(LIMIT_MB), "NANOLENS_MAX_UPLOAD_MB": str(LIMIT_MB),
           "NANOLENS_BLOCK_MB": "1"}
    running = Stack(extra_env=env, log_dir=tmp_path_factory.mktemp("stack-logs"))
    endpoints = running.start()
    yield running, endpoints
    running.stop()
