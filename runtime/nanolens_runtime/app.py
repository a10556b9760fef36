"""Bootstrap shared by every domain service's ``__main__``: settings, registry, pool, serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from nanolens_runtime.inference import InferencePool, select_providers
from nanolens_runtime.registry import ModelRegistry
from nanolens_runtime.server import Servicer, serve
from nanolens_runtime.service import DomainService
from nanolens_runtime.settings import InferenceSettings, ServerSettings, StorageSettings, from_env
from nanolens_runtime.storage import ObjectStore
from nanolens_runtime.version import SERVICE_VERSION


def run_model_service(service: DomainService,
                      make_servicers: Callable[[ModelRegistry, InferencePool, InferenceSettings], list[Servicer]],
                      ) -> None:
    """Run a domain service until SIGTERM: models from its ``bundles/``, NANOLENS_MODEL_DIR and the bucket."""
    server = from_env(ServerSettings)
    inference = from_env(InferenceSettings)
    storage = from_env(StorageSettings)
    providers = select_providers(inference.ort_providers)

    async def build():
        store = ObjectStore.from_settings(storage) if storage.s3_endpoint else None
        roots = [service.bundles] + ([Path(inference.model_dir)] if inference.model_dir else [])
        registry = ModelRegistry(service.tasks, service.default_model, roots,
                                 providers, inference.ort_intra_op_threads, store, storage.models_bucket)
        pool = InferencePool(inference.inference_threads)

        async def warm_up():
            await asyncio.to_thread(registry.load_all)

        return make_servicers(registry, pool, inference), warm_up

    asyncio.run(serve(service.name, SERVICE_VERSION, providers[0], server, build))
