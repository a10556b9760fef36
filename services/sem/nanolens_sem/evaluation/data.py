"""Loaders for the public SEM evaluation sets under ``NANOLENS_DATA/sem``.

- DeepSEM GaAs nanowires (Friedl, EPFL; MIT): 90 tiles cut from 15 source images (``<hole>nm_<n>``),
  with Labelbox boxes (nanowire, parasitic, nanospade) on 31 tiles.
- Lung-cell SEM, 5 classes (Mohan & Peeples, SEM_Images_Lacunarity; MIT): 35 images, 1024 x 1536.

The split is by source image: the autoencoder trains on the DeepSEM sources in ``TRAIN_SOURCES``
(and synthetic textures); the other DeepSEM sources and every lung-cell image are held out.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: DeepSEM source images the shipped autoencoder trains on (every other one of the 15, sorted)
TRAIN_SOURCES = ("125nm_03", "130nm_06", "135nm_07", "140nm_10", "140nm_17", "150nm_12", "160nm_13", "170nm_19")
BOX_CLASSES = {"nw": "nanowire", "parasitic": "parasitic", "nanospade": "nanospade"}


def data_root() -> Path:
    return Path(os.environ.get("NANOLENS_DATA", Path(__file__).resolve().parents[4].parent / "shared" / "data"))


def sem_root() -> Path | None:
    root = data_root() / "sem"
    return root if (root / "deepsem_gaas_nanowires").is_dir() else None


def read_grey(path: Path) -> np.ndarray:
    a = np.array(Image.open(path))
    return a[..., 0] if a.ndim == 3 else a


def source_of(path: Path) -> str:
    m = re.match(r"(\d+nm_\d+)_cropped", path.name)
    return m.group(1) if m else path.stem


@dataclass
class Item:
    path: Path
    group: str  # source image
    label: str


def deepsem_tiles(root: Path) -> list[Item]:
    return [Item(p, source_of(p), "") for p in sorted((root / "deepsem_gaas_nanowires").glob("*.png"))]


def lungcell_images(root: Path) -> list[Item]:
    return [Item(p, p.stem, p.parent.name) for p in sorted((root / "lungcell_sem_5class").glob("*/*.png"))]


def deepsem_boxes(root: Path) -> list[tuple[Path, str, tuple[int, int, int, int]]]:
    """(tile, class, (top, left, height, width)) of every labelled box (export file, 31 tiles)."""
    folder = root / "deepsem_gaas_nanowires"
    out = []
    for entry in json.loads((folder / "labels" / "export-2020-05-13T13_15_20.310Z.json").read_text()):
        m = re.search(r"(\d+nm_\d+_cropped_x\d_y\d)\.png", entry.get("Labeled Data", ""))
        label = entry.get("Label") or {}
        if not m or not isinstance(label, dict):
            continue
        path = folder / f"{m.group(1)}.png"
        for obj in label.get("objects", []):
            b = obj.get("bbox")
            if b and obj.get("value") in BOX_CLASSES:
                out.append((path, BOX_CLASSES[obj["value"]], (b["top"], b["left"], b["height"], b["width"])))
    return out
