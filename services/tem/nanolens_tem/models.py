"""Shipped model bundles (``nanolens_tem/bundles/<name>/<version>/``)."""

from __future__ import annotations

from pathlib import Path

BUNDLES = Path(__file__).resolve().parent / "bundles"


def _vkey(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in v.split("."))


def latest_bundle(name: str, root: Path = BUNDLES) -> Path | None:
    """Folder of the highest version of bundle ``name``, or None."""
    d = root / name
    if not d.is_dir():
        return None
    versions = sorted((p for p in d.iterdir() if (p / "model.onnx").exists()), key=lambda p: _vkey(p.name))
    return versions[-1] if versions else None


def default_onnx(name: str) -> Path | None:
    """The ONNX file of the latest shipped bundle ``name``, or None."""
    b = latest_bundle(name)
    return b / "model.onnx" if b else None
