"""Model registry: bundles from local folders and from the ``models`` bucket.

Bundles in the bucket use the same ``<name>/<version>/`` layout as on disk. A
service loads every bundle of its task at start; a request for a version that
appeared in the bucket later is fetched, verified and loaded on first use.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from nanolens.common.v1 import common_pb2
from nanolens_runtime import metrics
from nanolens_runtime.bundles import GRAPH_FILE, MANIFEST_FILE, ModelBundle, find_bundles, version_key
from nanolens_runtime.errors import AlreadyExists, InvalidModelBundle, NanoLensError, NotFound, Unavailable
from nanolens_runtime.inference import OnnxModel
from nanolens_runtime.storage import ObjectStore

log = logging.getLogger("nanolens.registry")


def upload_bundle(store: ObjectStore, bucket: str, bundle: ModelBundle) -> str:
    """Register a verified bundle in the bucket; an existing name/version is never replaced."""
    prefix = f"{bundle.name}/{bundle.version}/"
    store.ensure_bucket(bucket)
    if store.exists(bucket, prefix + MANIFEST_FILE):
        raise AlreadyExists(f"model {bundle.name} version {bundle.version} is already registered; "
                            "pick a new version")
    # Graph first, manifest last: a manifest in the bucket means the bundle is complete.
    store.put(bucket, prefix + GRAPH_FILE, bundle.onnx_path.read_bytes())
    store.put(bucket, prefix + MANIFEST_FILE, (bundle.path / MANIFEST_FILE).read_bytes(), "application/json")
    return f"s3://{bucket}/{prefix}"


class ModelRegistry:
    def __init__(self, task: str | tuple[str, ...], default_name: str, local_roots: list[Path], providers: list[str],
                 intra_op_threads: int = 1, store: ObjectStore | None = None, bucket: str = "models",
                 cache_dir: Path | None = None):
        # The tasks this service serves (a service may run several kinds of model).
        self.tasks = (task,) if isinstance(task, str) else tuple(task)
        self.task = "/".join(self.tasks)
        self.default_name = default_name
        self.local_roots = [Path(r) for r in local_roots]
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.store = store
        self.bucket = bucket
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="nanolens-models-"))
        self._models: dict[tuple[str, str], OnnxModel] = {}
        self._newest: dict[str, str] = {}  # model name -> newest loaded version
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------
    def load_all(self) -> None:
        """Load and warm every bundle of this task: local ones, then the bucket's."""
        for root in self.local_roots:
            for path in find_bundles(root):
                self._load(path)
        self.refresh()
        if not self._models:
            raise InvalidModelBundle(f"no '{self.task}' model bundle found in {self.local_roots} "
                                     f"or bucket {self.bucket!r}")

    def refresh(self) -> None:
        """Load bundles that appeared in the bucket since the last look."""
        if self.store is None:
            return
        try:
            keys = self.store.list(self.bucket)
        except NotFound:
            return
        except Unavailable as exc:  # local bundles still serve; the bucket is tried again later
            log.warning("models bucket unreachable", extra={"bucket": self.bucket, "error": str(exc)})
            return
        for key in keys:
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_FILE and (parts[0], parts[1]) not in self._models:
                try:
                    self._fetch(parts[0], parts[1])
                except NanoLensError as exc:
                    log.warning("skipping bundle in bucket", extra={"key": key, "error": str(exc)})

    def _fetch(self, name: str, version: str) -> OnnxModel | None:
        # One fetch at a time: concurrent first requests for a new model (and ListModels' refresh)
        # would otherwise write the same cache files while another thread verifies them.
        with self._fetch_lock:
            if (name, version) in self._models:
                return self._models[(name, version)]
            target = self.cache_dir / name / version
            target.mkdir(parents=True, exist_ok=True)
            for filename in (MANIFEST_FILE, GRAPH_FILE):
                part = target / f"{filename}.part"
                part.write_bytes(self.store.get(self.bucket, f"{name}/{version}/{filename}"))
                part.replace(target / filename)
            return self._load(target)

    def _load(self, path: Path) -> OnnxModel | None:
        bundle = ModelBundle.load(path)
        if bundle.task not in self.tasks:
            return None
        model = OnnxModel(bundle, self.providers, self.intra_op_threads)
        model.warm_up()
        with self._lock:
            self._models.setdefault((bundle.name, bundle.version), model)
            newest = self._newest.get(bundle.name)
            if newest is None or version_key(bundle.version) > version_key(newest):
                self._newest[bundle.name] = bundle.version
            metrics.models_loaded.labels(metrics.service_name()).set(len(self._models))
        log.info("model loaded", extra={"model": model.key, "sha256": bundle.sha256, "provider": model.provider})
        return self._models[(bundle.name, bundle.version)]

    # -- lookup ------------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        return sorted((v for (n, v) in self._models if n == name), key=version_key)

    def loaded(self, name: str = "", version: str = "") -> OnnxModel | None:
        """The model if it is loaded already (no I/O: safe on the event loop, and on every request's
        path: the newest version is kept as models load, not sorted per call), else None."""
        name = name or self.default_name
        version = version or self._newest.get(name, "")
        return self._models.get((name, version)) if version else None

    def get(self, name: str = "", version: str = "") -> OnnxModel:
        """The named model (default: the service's default), version (default: newest)."""
        name = name or self.default_name
        if not version:
            known = self.versions(name)
            if not known:
                self.refresh()
                known = self.versions(name)
            if not known:
                raise NotFound(f"no model named {name!r} for task {self.task}", "model", name)
            version = known[-1]
        model = self._models.get((name, version))
        if model is None and self.store is not None:
            try:
                model = self._fetch(name, version)
            except NotFound:
                model = None
        if model is None:
            raise NotFound(f"model {name!r} version {version!r} is not registered", "model", f"{name}:{version}")
        return model

    @property
    def models(self) -> list[OnnxModel]:
        return [self._models[k] for k in sorted(self._models, key=lambda k: (k[0], version_key(k[1])))]

    def infos(self, code_sha256: str = "") -> list[common_pb2.ModelInfo]:
        """Catalogue entries of the loaded models; ``code_sha256`` is the serving code's
        (:func:`nanolens_runtime.bundles.code_sha256`)."""
        default = self.versions(self.default_name)
        infos = []
        for model in self.models:
            m = model.bundle.manifest
            infos.append(common_pb2.ModelInfo(
                name=model.bundle.name, version=model.bundle.version, task=model.bundle.task,
                sha256=model.bundle.sha256, class_names=model.bundle.class_names,
                metrics={k: float(v) for k, v in m["metrics"].items() if isinstance(v, int | float)},
                training_data_sha256=str(m["training_data"].get("sha256", "")), created=m["created"],
                is_default=bool(default)
                and (model.bundle.name, model.bundle.version) == (self.default_name, default[-1]),
                description=m["description"], code_sha256=code_sha256,
            ))
        return infos
