"""Shared fixtures: a real S3 API server (moto) on loopback and a minio-backed store."""

from __future__ import annotations

import uuid

import pytest
from moto.server import ThreadedMotoServer

from nanolens_cli.stack import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, Stack, free_port
from nanolens_runtime.settings import StorageSettings
from nanolens_runtime.storage import ObjectStore
from support import LIMIT_MB


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def storage_settings(s3_endpoint) -> StorageSettings:
    return StorageSettings(s3_endpoint=s3_endpoint, s3_access_key=LOCAL_ACCESS_KEY,
                           s3_secret_key=LOCAL_SECRET_KEY, models_bucket=f"models-{uuid.uuid4().hex[:8]}")


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
