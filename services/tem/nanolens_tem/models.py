"""Shipped model bundles (``nanolens_tem/bundles/<name>/<version>/``), found with the runtime's helpers."""

from __future__ import annotations

from pathlib import Path

from nanolens_runtime.bundles import GRAPH_FILE, find_bundles, version_key

BUNDLES = Path(__file__).resolve().parent / "bundles"


def latest_bundle(name: str, root: Path = BUNDLES) -> Path | None:
    """Folder of the highest version of bundle ``name``, or None."""
    versions = [p for p in find_bundles(root) if p.parent.name == name]
    return max(versions, key=lambda p: version_key(p.name)) if versions else None


def default_onnx(name: str) -> Path | None:
    """The ONNX file of the latest shipped bundle ``name``, or None."""
    bundle = latest_bundle(name)
    return bundle / GRAPH_FILE if bundle else None
