"""Model bundles: an ONNX graph plus a manifest, verified when loaded.

Layout (the same on disk and in the ``models`` bucket, Triton style)::

    <root>/<name>/<version>/model.onnx
    <root>/<name>/<version>/manifest.json

The manifest records what a scientist needs to trust a number: the task, the input
and output spec, class names, preprocessing parameters, evaluation metrics, a hash
of the training data and the sha256 of the graph itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanolens_runtime.errors import InvalidModelBundle

SCHEMA_VERSION = 1
GRAPH_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"

# key -> type(s) the manifest value must have
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "name": str,
    "version": str,
    "task": str,
    "description": str,
    "created": str,
    "inputs": list,
    "outputs": list,
    "class_names": list,
    "preprocessing": dict,
    "metrics": dict,
    "training_data": dict,
    "framework": dict,
    "graph": dict,
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_sha256(*files: Path, extra: str = "") -> str:
    """sha256 of the named source files (in order) and ``extra`` (e.g. library versions): the
    identity of the code around a model, which stored results depend on as much as on the model."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    h.update(extra.encode())
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_json(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes of a manifest (sorted keys), so that rebuilds are byte-identical."""
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()


def validate_manifest(manifest: Any, source: str) -> None:
    """Raise InvalidModelBundle naming the first key that is missing or of the wrong type."""
    if not isinstance(manifest, dict):
        raise InvalidModelBundle(f"{source}: manifest is not a JSON object")
    for key, expected in REQUIRED_KEYS.items():
        if key not in manifest:
            raise InvalidModelBundle(f"{source}: manifest lacks '{key}'")
        if not isinstance(manifest[key], expected):
            raise InvalidModelBundle(f"{source}: manifest '{key}' has the wrong type")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise InvalidModelBundle(
            f"{source}: manifest schema_version {manifest['schema_version']} is not {SCHEMA_VERSION}"
        )
    for key in ("name", "version"):
        value = manifest[key]
        if not value or "/" in value or value in (".", ".."):
            raise InvalidModelBundle(f"{source}: manifest '{key}' {value!r} is not a valid path segment")
    for spec in manifest["inputs"] + manifest["outputs"]:
        if not isinstance(spec, dict) or not {"name", "dtype", "shape"} <= spec.keys():
            raise InvalidModelBundle(f"{source}: each input/output needs name, dtype and shape")
    graph = manifest["graph"]
    if not isinstance(graph.get("sha256"), str) or len(graph["sha256"]) != 64:
        raise InvalidModelBundle(f"{source}: manifest 'graph.sha256' is missing or malformed")


# Node metadata that records the exporting checkout's file paths (torch's dynamo exporter).
_PATH_METADATA = ("pkg.torch.onnx.stack_trace",)


def reproducible_onnx(onnx_bytes: bytes) -> bytes:
    """The graph without metadata that names where the code was checked out, so that the same
    model exported from any folder has the same bytes (and sha256)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    graphs = [model.graph] + [f for f in model.functions]
    changed = False
    for graph in graphs:
        for node in graph.node:
            keep = [p for p in node.metadata_props if p.key not in _PATH_METADATA]
            if len(keep) != len(node.metadata_props):
                changed = True
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
    return model.SerializeToString() if changed else onnx_bytes


def write_bundle(out_dir: Path, onnx_bytes: bytes, manifest: dict[str, Any]) -> Path:
    """Write ``model.onnx`` and ``manifest.json`` into ``out_dir``; fills ``manifest['graph']``."""
    out_dir = Path(out_dir)
    onnx_bytes = reproducible_onnx(onnx_bytes)
    manifest = dict(manifest, graph={"file": GRAPH_FILE, "sha256": sha256_bytes(onnx_bytes)})
    validate_manifest(manifest, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / GRAPH_FILE).write_bytes(onnx_bytes)
    (out_dir / MANIFEST_FILE).write_bytes(manifest_json(manifest))
    return out_dir


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle on local disk."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> ModelBundle:
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise InvalidModelBundle(f"{path}: no {MANIFEST_FILE}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidModelBundle(f"{manifest_path}: not valid JSON ({exc})") from exc
        validate_manifest(manifest, str(path))
        graph_path = path / manifest["graph"].get("file", GRAPH_FILE)
        if not graph_path.is_file():
            raise InvalidModelBundle(f"{path}: graph file {graph_path.name} is missing")
        actual = sha256_file(graph_path)
        if actual != manifest["graph"]["sha256"]:
            raise InvalidModelBundle(
                f"{path}: sha256 of {graph_path.name} is {actual}, manifest says {manifest['graph']['sha256']}"
            )
        return cls(path=path, manifest=manifest)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def sha256(self) -> str:
        return self.manifest["graph"]["sha256"]

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest["graph"].get("file", GRAPH_FILE)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])


def version_key(version: str) -> tuple:
    """Sort key that orders "2" before "10" and falls back to text for non-numeric parts."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in version.split("."))


def find_bundles(root: Path) -> list[Path]:
    """Bundle directories under ``root`` (``<name>/<version>/manifest.json``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/*/{MANIFEST_FILE}"))
