"""Model registry: bundles from local folders and from the ``models`` bucket.

Bundles in the bucket use the same ``<name>/<version>/`` layout as on disk. A
service catalogues every bundle of its tasks at start and warms the newest version of
each model name; any other version is fetched, verified and loaded on its first request.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from pathlib import Path

from nanolens.common.v1 import common_pb2
from nanolens_runtime import metrics
from nanolens_runtime.bundles import (
    GRAPH_FILE,
    MANIFEST_FILE,
    ModelBundle,
    find_bundles,
    validate_manifest,
    version_key,
)
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
    """The bundles a service can serve, and the sessions it has loaded.

    The catalogue holds every bundle of the service's tasks: the local folders' (verified at
    start) and the bucket's (their manifests; the graph is fetched when first needed). Only the
    newest version of each model name is loaded and warmed, at start and when a newer one is
    registered: that is what a request naming no version gets. Any other version is fetched,
    verified and warmed on its first request.
    """

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
        # (name, version) -> manifest, and the local folder for bundles that are on disk.
        self._manifests: dict[tuple[str, str], dict] = {}
        self._local: dict[tuple[str, str], Path] = {}
        self._models: dict[tuple[str, str], OnnxModel] = {}
        self._newest: dict[str, str] = {}  # model name -> newest loaded version
        self._rejected: set[tuple[str, str]] = set()  # bucket bundles that failed verification
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()

    # -- catalogue and loading ---------------------------------------------------------
    def load_all(self) -> None:
        """Build the catalogue (local bundles, then the bucket's) and warm the newest version of
        each model name."""
        for root in self.local_roots:
            for path in find_bundles(root):
                bundle = ModelBundle.load(path)
                if bundle.task in self.tasks:
                    key = (bundle.name, bundle.version)
                    self._manifests.setdefault(key, bundle.manifest)
                    self._local.setdefault(key, path)
        self.refresh()
        if not self._manifests:
            raise InvalidModelBundle(f"no '{self.task}' model bundle found in {self.local_roots} "
                                     f"or bucket {self.bucket!r}")
        self._warm_newest()

    def refresh(self) -> None:
        """Add the bundles registered in the bucket since the last look (their manifests only)
        and warm any that is now the newest of its name."""
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
            if (len(parts) == 3 and parts[2] == MANIFEST_FILE
                    and (parts[0], parts[1]) not in self._manifests and (parts[0], parts[1]) not in self._rejected):
                try:
                    self._add_remote(key)
                except NanoLensError as exc:
                    log.warning("skipping bundle in bucket", extra={"key": key, "error": str(exc)})
        if self._models:  # after start: a newly registered newest version serves at once
            self._warm_newest()

    def _add_remote(self, key: str) -> None:
        try:
            manifest = json.loads(self.store.get(self.bucket, key))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidModelBundle(f"s3://{self.bucket}/{key}: not valid JSON ({exc})") from exc
        validate_manifest(manifest, f"s3://{self.bucket}/{key}")
        name, version = key.split("/")[:2]
        if (manifest["name"], manifest["version"]) != (name, version):
            raise InvalidModelBundle(f"s3://{self.bucket}/{key}: manifest names "
                                     f"{manifest['name']}:{manifest['version']}, not {name}:{version}")
        if manifest["task"] in self.tasks:
            self._manifests[(name, version)] = manifest

    def _warm_newest(self) -> None:
        for name in sorted({n for n, _ in self._manifests}):
            for version in reversed(self.versions(name)):
                try:
                    if self._materialise(name, version) is not None:
                        break
                except NanoLensError as exc:
                    # Not servable (a corrupt graph, say): out of the catalogue, so requests that
                    # name no version get the newest good one; naming it still says what is wrong.
                    log.warning("bundle not loadable", extra={"model": f"{name}:{version}", "error": str(exc)})
                    self._manifests.pop((name, version), None)
                    self._local.pop((name, version), None)
                    self._rejected.add((name, version))

    def _materialise(self, name: str, version: str) -> OnnxModel | None:
        if (name, version) in self._models:
            return self._models[(name, version)]
        if (name, version) in self._local:
            with self._fetch_lock:
                return self._models.get((name, version)) or self._load(self._local[(name, version)])
        if self.store is None:
            return None
        return self._fetch(name, version)

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
            self._manifests.setdefault((bundle.name, bundle.version), bundle.manifest)
            newest = self._newest.get(bundle.name)
            if newest is None or version_key(bundle.version) > version_key(newest):
                self._newest[bundle.name] = bundle.version
            metrics.models_loaded.labels(metrics.service_name()).set(len(self._models))
        log.info("model loaded", extra={"model": model.key, "sha256": bundle.sha256, "provider": model.provider})
        return self._models[(bundle.name, bundle.version)]

    # -- lookup ------------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        """Every catalogued version of ``name``, oldest first (loaded or not)."""
        return sorted((v for (n, v) in self._manifests if n == name), key=version_key)

    def is_loaded(self, name: str, version: str) -> bool:
        return (name, version) in self._models

    def loaded(self, name: str = "", version: str = "") -> OnnxModel | None:
        """The model if it is loaded already (no I/O: safe on the event loop, and on every request's
        path: the newest version is kept as models load, not sorted per call), else None."""
        name = name or self.default_name
        version = version or self._newest.get(name, "")
        return self._models.get((name, version)) if version else None

    def get(self, name: str = "", version: str = "") -> OnnxModel:
        """The named model (default: the service's default), version (default: newest); loaded
        and warmed here if this is its first request."""
        name = name or self.default_name
        if not version:
            known = self.versions(name)
            if not known:
                self.refresh()
                known = self.versions(name)
            if not known:
                raise NotFound(f"no model named {name!r} for task {self.task}", "model", name)
            version = known[-1]
        try:
            model = self._materialise(name, version)
        except NotFound:
            model = None
        if model is None:
            raise NotFound(f"model {name!r} version {version!r} is not registered", "model", f"{name}:{version}")
        return model

    @property
    def models(self) -> list[OnnxModel]:
        """The loaded models, by name and version."""
        return [self._models[k] for k in sorted(self._models, key=lambda k: (k[0], version_key(k[1])))]

    def infos(self, code_sha256: str = "") -> list[common_pb2.ModelInfo]:
        """Catalogue entries of every servable model, loaded or not; ``code_sha256`` is the
        serving code's (:func:`nanolens_runtime.bundles.code_sha256`)."""
        default = self.versions(self.default_name)
        infos = []
        for key in sorted(self._manifests, key=lambda k: (k[0], version_key(k[1]))):
            m = self._manifests[key]
            infos.append(common_pb2.ModelInfo(
                name=m["name"], version=m["version"], task=m["task"],
                sha256=m["graph"]["sha256"], class_names=list(m["class_names"]),
                metrics={k: float(v) for k, v in m["metrics"].items() if isinstance(v, int | float)},
                training_data_sha256=str(m["training_data"].get("sha256", "")), created=m["created"],
                training_data=str(m["training_data"].get("source", "")),
                is_default=bool(default) and key == (self.default_name, default[-1]),
                description=m["description"], code_sha256=code_sha256,
            ))
        return infos
