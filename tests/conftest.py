"""Shared fixtures: the stack's object store (SeaweedFS) alone and a minio-backed store on it; the
session's stack with a gateway stub and its store; stacks of a module's own settings."""

from __future__ import annotations

import uuid

import grpc
import pytest

from nanolens.gateway.v1 import gateway_pb2_grpc
from nanolens_cli.stack import EmbeddedStore, Stack, free_port
from nanolens_runtime.settings import StorageSettings
from nanolens_runtime.storage import ObjectStore
from support import LIMIT_MB


def _starts_a_stack(item) -> bool:
    """The test, or a fixture it uses, names ``Stack`` (or asks for ``start_stack``)."""
    functions = [getattr(item, "function", None)]
    for definitions in item._fixtureinfo.name2fixturedefs.values():
        functions += [d.func for d in definitions]
    return "start_stack" in item.fixturenames or any(
        "Stack" in getattr(getattr(f, "__code__", None), "co_names", ()) for f in functions)


def pytest_collection_modifyitems(config, items):
    """Every test that runs a stack is ``slow``: ``-m "not slow"`` is the quick loop (CONTRIBUTING.md)."""
    for item in items:
        if _starts_a_stack(item):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def gateway(stack):
    """A gateway stub on the session's stack."""
    with grpc.insecure_channel(stack[1].gateway) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


@pytest.fixture(scope="session")
def stack_store(stack) -> ObjectStore:
    """The session stack's object store, reached with its credentials."""
    return ObjectStore.from_settings(stack[1].storage_settings())


@pytest.fixture(scope="module")
def start_stack(tmp_path_factory):
    """``start_stack(name, **Stack arguments) -> (stack, endpoints)``: a stack with a module's own
    settings or domains, its logs kept under ``<name>-logs``; every one is stopped after the module."""
    started: list[Stack] = []

    def start(name: str, **arguments) -> tuple[Stack, object]:
        running = Stack(log_dir=tmp_path_factory.mktemp(f"{name}-logs"), **arguments)
        started.append(running)
        return running, running.start()

    yield start
    for running in reversed(started):
        running.stop()
