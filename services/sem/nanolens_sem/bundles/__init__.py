"""Shipped model bundles (``bundles/<name>/<version>/``), found with the runtime's helpers."""

from __future__ import annotations

from pathlib import Path

from nanolens_runtime.bundles import find_bundles, version_key

BUNDLES = Path(__file__).resolve().parent


def latest_bundle(name: str, root: Path = BUNDLES) -> Path | None:
    """Folder of the highest version of bundle ``name``, or None."""
    versions = [p for p in find_bundles(root) if p.parent.name == name]
    return max(versions, key=lambda p: version_key(p.name)) if versions else None
